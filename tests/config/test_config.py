"""detkit.config: defaults, _BASE_ chains, overrides, validation errors, project keys, dumping."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from detkit.config import (
    ConfigError,
    add_config,
    check_config,
    dump_config,
    get_default_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_config_holds_the_papers_settings() -> None:
    cfg = load_config(REPO / "configs" / "Base-FastRCNN.yaml")
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE * cfg.SOLVER.IMS_PER_BATCH == 128
    assert cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION == 0.25
    assert list(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) == [0.1, 0.5]
    assert list(cfg.MODEL.ROI_HEADS.IOU_LABELS) == [-1, 0, 1]
    assert list(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS) == [10.0, 10.0, 5.0, 5.0]
    assert cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION == 7
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY) == (
        0.001,
        0.9,
        0.0005,
    )
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [600] and cfg.INPUT.MAX_SIZE_TRAIN == 1000
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.3


def test_base_chain_resolves_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\nSEED: 1\n")
    write(tmp_path / "mid" / "mid.yaml", "_BASE_: ../root.yaml\nSOLVER:\n  MAX_ITER: 8\n")
    leaf = write(tmp_path / "mid" / "deep" / "leaf.yaml", "_BASE_: ../mid.yaml\nSEED: 3\n")
    cfg = load_config(leaf)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SEED) == (0.5, 8, 3)
    assert cfg.SOLVER.MOMENTUM == get_default_config().SOLVER.MOMENTUM


def test_overrides_take_dotted_keys_and_yaml_values(tmp_path: Path) -> None:
    file = write(tmp_path / "a.yaml", "SOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(
        file,
        [
            "SOLVER.BASE_LR=0.01",
            "SOLVER.STEPS=[10, 20]",
            "MODEL.BACKBONE.NAME=ResNet",
            "DATASETS.TRAIN=[a, b]",
            "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT=false",
        ],
    )
    assert cfg.SOLVER.BASE_LR == 0.01
    assert list(cfg.SOLVER.STEPS) == [10, 20]
    assert cfg.MODEL.BACKBONE.NAME == "ResNet"
    assert list(cfg.DATASETS.TRAIN) == ["a", "b"]
    assert cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT is False


def test_loading_leaves_the_given_defaults_untouched(tmp_path: Path) -> None:
    defaults = get_default_config()
    load_config(write(tmp_path / "a.yaml", "SEED: 5\n"), ["SOLVER.BASE_LR=3.0"], defaults)
    assert defaults.SEED == -1 and defaults.SOLVER.BASE_LR == 0.001


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("SOLVER:\n  BASE_RL: 0.1\n", ["a.yaml", "SOLVER.BASE_RL", "did you mean SOLVER.BASE_LR?"]),
        ("SOLVER:\n  MAX_ITER: many\n", ["a.yaml", "SOLVER.MAX_ITER", "takes an int", "'many'"]),
        ("SOLVER:\n  STEPS: 5\n", ["a.yaml", "SOLVER.STEPS", "a list of int"]),
        ("SOLVER: 3\n", ["a.yaml", "SOLVER is a section"]),
        ("MY_PROJECT:\n  DEPTH: 3\n", ["unknown config key MY_PROJECT", "add_config"]),
        (  # a project's section inside one of detkit's, as OHEM's MODEL.OHEM
            "MODEL:\n  OHEM:\n    NMS_THRESH: 0.5\n",
            [
                "unknown config key MODEL.OHEM",
                "no section MODEL.OHEM in the defaults",
                "add_config",
            ],
        ),
        ("- just\n- a list\n", ["a.yaml", "mapping"]),
        ("SOLVER: [unclosed\n", ["a.yaml", "not valid YAML"]),
        ("MODEL:\n  PIXEL_MEAN: [1, [2], 3]\n", ["a.yaml", "its element [2] is a list"]),
    ],
)
def test_file_errors_name_the_key_and_file(tmp_path: Path, text: str, fragments: list[str]) -> None:
    file = write(tmp_path / "a.yaml", text)
    with pytest.raises(ConfigError) as error:
        load_config(file)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("SOLVER.BASE_RL=0.1", ["override 'SOLVER.BASE_RL=0.1'", "did you mean SOLVER.BASE_LR?"]),
        (
            "MODEL.DOUBLE_HEAD.CONV_DIM=8",
            ["unknown config key MODEL.DOUBLE_HEAD.CONV_DIM", "no section MODEL.DOUBLE_HEAD"],
        ),
        ("MODEL.ROI_HEADS.NUM_CLASES=3", ["did you mean MODEL.ROI_HEADS.NUM_CLASSES?"]),
        ("SOLVER.MAX_ITER=abc", ["SOLVER.MAX_ITER takes an int", "'abc'"]),
        ("SOLVER.IMS_PER_BATCH=[1]", ["SOLVER.IMS_PER_BATCH"]),
        ("SOLVER.BASE_LR", ["is not KEY=VALUE"]),
        ("=3", ["is not KEY=VALUE"]),
        ("SOLVER.STEPS=[1, 2", ["not valid YAML"]),
    ],
)
def test_override_errors_name_the_override(override: str, fragments: list[str], tmp_path) -> None:
    file = write(tmp_path / "a.yaml", "SEED: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(file, [override])
    for fragment in fragments:
        assert fragment in str(error.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nothing\.yaml"):
        load_config(tmp_path / "nothing.yaml")
    child = write(tmp_path / "child.yaml", "_BASE_: gone/base.yaml\n")
    with pytest.raises(ConfigError) as error:
        load_config(child)
    assert "child.yaml" in str(error.value) and "gone/base.yaml" in str(error.value)


def test_an_alias_in_a_base_file_names_the_base(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "SEED: &s 1\nSOLVER:\n  MAX_ITER: *s\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml:3: the alias \*s is refused"):
        load_config(child)


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


@dataclass
class MyHead:
    DEPTH: int = 3
    WIDTHS: list[int] = field(default_factory=lambda: [8, 16])


@dataclass
class MyProject:
    MY_HEAD: MyHead = field(default_factory=MyHead)


def test_projects_add_keys_without_editing_defaults(tmp_path: Path) -> None:
    file = write(tmp_path / "p.yaml", "MY_HEAD:\n  DEPTH: 5\nSOLVER:\n  MAX_ITER: 9\n")
    with pytest.raises(ConfigError, match="add_config"):
        load_config(file)
    extended = add_config(get_default_config(), MyProject)
    cfg = load_config(file, ["MY_HEAD.WIDTHS=[1, 2, 3]"], defaults=extended)
    assert (cfg.MY_HEAD.DEPTH, list(cfg.MY_HEAD.WIDTHS), cfg.SOLVER.MAX_ITER) == (5, [1, 2, 3], 9)
    with pytest.raises(ConfigError, match=r"MY_HEAD\.DEPTH takes an int"):
        load_config(file, ["MY_HEAD.DEPTH=deep"], defaults=extended)
    assert "MY_HEAD" not in get_default_config()


def test_projects_may_add_keys_inside_detkit_sections() -> None:
    cfg = add_config(get_default_config(), {"MODEL": {"MY_LAYER": {"ON": True}}})
    assert cfg.MODEL.MY_LAYER.ON is True and cfg.MODEL.BACKBONE.NAME == "VGG16"


def test_projects_cannot_redefine_detkit_keys() -> None:
    with pytest.raises(ConfigError, match=r"SOLVER\.BASE_LR is already defined"):
        add_config(get_default_config(), {"SOLVER": {"BASE_LR": 1.0}})
    with pytest.raises(ConfigError, match=r"SEED is already defined"):  # a key, not a section
        add_config(get_default_config(), {"SEED": {"OFFSET": 1}})


@dataclass
class MySolverKeys:
    MY_FACTOR: float = 1.5
    MY_STEPS: list[int] = field(default_factory=lambda: [1])


@dataclass
class MyKeysInDetkitSections:
    SOLVER: MySolverKeys = field(default_factory=MySolverKeys)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("SOLVER.MY_FACTOR=abc", "SOLVER.MY_FACTOR takes a float, got 'abc' (str)"),
        ("SOLVER.MY_STEPS=3", "SOLVER.MY_STEPS takes a list of int, got 3 (int)"),
        ("SOLVER.MY_STEPS=[a]", "SOLVER.MY_STEPS takes a list of int, got ['a'] (list)"),
        (
            "SOLVER.MY_STEPS=[1, 2: 3]",
            "SOLVER.MY_STEPS takes a list of int, got [1, {2: 3}]: its element {2: 3} is a "
            "mapping (in YAML, `a: b` inside [...] is a mapping)",
        ),
    ],
)
def test_typed_project_keys_inside_detkit_sections_keep_their_types(
    tmp_path: Path, override: str, message: str
) -> None:
    extended = add_config(get_default_config(), MyKeysInDetkitSections)
    file = write(tmp_path / "a.yaml", "SOLVER:\n  MY_FACTOR: 2\n")
    cfg = load_config(file, defaults=extended)
    assert cfg.SOLVER.MY_FACTOR == 2.0 and isinstance(cfg.SOLVER.MY_FACTOR, float)
    assert cfg.SOLVER.BASE_LR == get_default_config().SOLVER.BASE_LR
    with pytest.raises(ConfigError) as error:
        load_config(file, [override], defaults=extended)
    assert str(error.value) == f"override {override!r}: {message}"


def test_dumped_config_loads_back_unchanged(tmp_path: Path) -> None:
    extended = add_config(get_default_config(), MyProject)
    cfg = load_config(
        REPO / "configs" / "Base-FastRCNN.yaml",
        ["SOLVER.STEPS=[5, 7]", "MY_HEAD.DEPTH=4", "DATASETS.TRAIN=[shapes_train]"],
        defaults=extended,
    )
    dumped = write(tmp_path / "config.yaml", dump_config(cfg))
    assert load_config(dumped, defaults=extended) == cfg


def test_an_empty_override_is_the_empty_string(tmp_path: Path) -> None:
    file = write(tmp_path / "a.yaml", "MODEL:\n  WEIGHTS: output/model_final.pth\n")
    assert load_config(file, ["MODEL.WEIGHTS="]).MODEL.WEIGHTS == ""
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER takes an int, got ''"):
        load_config(file, ["SOLVER.MAX_ITER="])


@pytest.mark.parametrize(
    "text, expected", [("(20,)", [20]), ("(3000, 4000)", [3000, 4000]), ("[5, 6]", [5, 6])]
)
def test_list_keys_take_detectron2_tuple_syntax(text: str, expected: list[int]) -> None:
    cfg = load_config(REPO / "configs" / "shapes" / "fast_rcnn.yaml", [f"SOLVER.STEPS={text}"])
    assert list(cfg.SOLVER.STEPS) == expected


def test_a_malformed_tuple_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"SOLVER\.STEPS takes a list, got '\(20,'"):
        load_config(REPO / "configs" / "shapes" / "fast_rcnn.yaml", ["SOLVER.STEPS=(20,"])


def test_overriding_only_max_iter_passes_the_checks() -> None:
    """Steps and warm-up past a shortened run are fitted to it (with a warning), not refused."""
    cfg = load_config(REPO / "configs" / "shapes" / "fast_rcnn.yaml", ["SOLVER.MAX_ITER=20"])
    check_config(cfg)
