"""Config files: what YAML, interpolations and declared datasets a config may hold.

Every piece of YAML a user gives (a config file and its `_BASE_` chain, the value of a
`KEY=VALUE` override, and so the `DATASETS.REGISTER` entries in either) is read by one function,
`detkit.config.yaml_reader.read_yaml`: PyYAML's safe loader (no tag builds a Python object), no
key twice in one mapping, no alias (`*name`: a kilobyte of nested aliases expands into billions
of values) and no base-60 numbers (`20:30` is text, not 1230); a refusal names the file and line
or the override. A list key takes a list of plain values (`[10, 20: 30]` holds a mapping).
The only interpolation is `${oc.env:VAR}` (or `${oc.env:VAR,default}`): it is replaced by the
variable's value as the config is loaded, so an unset variable is refused naming the key and
the variable, and the run's `config.yaml` holds the values used; a reference to another key
or any other resolver is refused. Loading a config reads its YAML files and nothing else; the
set-up step after it (`detkit.data.setup_datasets`, run by every tool) registers its
`DATASETS.REGISTER` entries and reads the class names. An entry's fields are checked as it is
read: `NAME`, `FORMAT` (any case), the paths and `SPLIT` are text, `YEAR` an integer,
`CLASS_NAMES` a list of text. Relative paths are read from the working directory, as every
path in a config but `_BASE_`; a file that is missing, a folder, not JSON or not a COCO file is
refused naming the entry, the field and the path it resolved to, when its class names are read
or, for `train_net`, before any work. A COCO file's class names are those of its top-level
`categories`; the built-in COCO sets carry COCO 2017's from their registration.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from reliability_helpers import SHAPES_CONFIG, TinyRun, run_tool

from detkit.config import ConfigError, load_config
from detkit.data import MetadataCatalog, setup_datasets
from detkit.data.config_datasets import unregister_config_datasets
from detkit.engine.defaults import write_config

UNSET = "DETKIT_TEST_SURELY_UNSET"


@contextmanager
def finishes_within(seconds: int) -> Iterator[None]:
    """Fails the test with ``TimeoutError`` when the block runs longer than ``seconds``."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def alias_bomb(levels: int = 9) -> str:
    """A YAML flow list of ``levels`` anchored lists, each of nine aliases of the one before:
    about 1 KB of text that expands into 9**levels strings."""
    lists = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lists += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(lists)}]"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_with(tmp_path: Path, text: str) -> Path:
    """A config file over the shapes config holding ``text``."""
    return write(tmp_path / "c.yaml", f"_BASE_: {SHAPES_CONFIG}\n{text}")


def register(entry: str, *lines: str) -> str:
    """Config text declaring the one dataset ``entry`` (a YAML flow mapping)."""
    return "DATASETS:\n  REGISTER:\n    - " + entry + "\n" + "".join(f"{line}\n" for line in lines)


def set_up(path: Path):
    """The config of ``path`` loaded and set up, as every tool does."""
    return setup_datasets(load_config(path), path)


def coco_json(path: Path, categories: list) -> Path:
    """A COCO instances file of no image with ``categories``."""
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    return path


@pytest.fixture
def forget() -> Iterator[list[str]]:
    """Names of datasets a test registers, removed from the catalogs after it."""
    names: list[str] = []
    yield names
    unregister_config_datasets(names)


# ---------------------------------------------------------------------------- YAML aliases


def test_alias_bomb_in_a_config_file(tmp_path) -> None:
    """A 1 KB alias bomb (nine levels of nine aliases) in a config file (was minutes at full CPU)
    → refused at once, naming the file and line."""
    config = config_with(tmp_path, f"MODEL:\n  PIXEL_MEAN: {alias_bomb()}\n")
    with finishes_within(5), pytest.raises(ConfigError) as error:
        load_config(config)
    assert "c.yaml:3:" in str(error.value) and "alias" in str(error.value)


def test_alias_bomb_in_a_dataset_entry(tmp_path) -> None:
    """An alias bomb inside a `DATASETS.REGISTER` entry → refused at once, naming the file."""
    entry = f"{{NAME: bomb, FORMAT: coco, JSON_FILE: a.json, IMAGE_ROOT: i, X: {alias_bomb()}}}"
    with finishes_within(5), pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, register(entry)))
    assert "c.yaml:4:" in str(error.value) and "alias" in str(error.value)


def test_alias_bomb_in_an_override() -> None:
    """An alias bomb as the value of one `KEY=VALUE` override → refused at once, naming the
    override."""
    override = f"DATASETS.REGISTER=[{{NAME: b, FORMAT: coco, X: {alias_bomb()}}}]"
    with finishes_within(5), pytest.raises(ConfigError) as error:
        load_config(SHAPES_CONFIG, [override])
    assert str(error.value).startswith("override 'DATASETS.REGISTER=") and "alias" in str(
        error.value
    )


def test_train_net_refuses_an_alias_bomb(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` on a config file holding an alias bomb → exit status 2 within seconds, one
    line on stderr naming the file, nothing written."""
    config = config_with(tmp_path, f"MODEL:\n  PIXEL_MEAN: {alias_bomb()}\n")
    output = tmp_path / "out"
    started = time.monotonic()
    result = run_tool(
        "train_net.py", "--config-file", config, *tiny_run.overrides(output),
        root=tiny_run.root, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "c.yaml:3:" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30 and not output.exists()


@pytest.mark.parametrize("depth", [100, 5000], ids=["100 levels", "5000 levels"])
def test_deeply_nested_value(depth: int) -> None:
    """A value nested 100 or 5000 lists deep in one override (was a `RecursionError` traceback
    from OmegaConf or the YAML parser) → refused naming the override."""
    nested = "[" * depth + "]" * depth
    with pytest.raises(ConfigError, match=r"^override 'DATASETS\.REGISTER=.*nested too deeply"):
        load_config(SHAPES_CONFIG, [f"DATASETS.REGISTER=[{{NAME: b, FORMAT: coco, X: {nested}}}]"])


# ------------------------------------------------------------------- values of list keys


def test_mapping_inside_a_list_in_a_file(tmp_path) -> None:
    """`SOLVER.STEPS: [10, 20: 30]` in a file (was a `TypeError` traceback when the schedule was
    built) → refused naming the file, the key and the mapping."""
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, "SOLVER:\n  STEPS: [10, 20: 30]\n"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'c.yaml'}: SOLVER.STEPS takes a list of int")
    assert "{20: 30}" in message


def test_mapping_inside_a_list_in_an_override() -> None:
    """`SOLVER.STEPS=[10, 20: 30]` as an override → refused naming the override and the key."""
    with pytest.raises(ConfigError) as error:
        load_config(SHAPES_CONFIG, ["SOLVER.STEPS=[10, 20: 30]"])
    assert str(error.value).startswith(
        "override 'SOLVER.STEPS=[10, 20: 30]': SOLVER.STEPS takes a list of int"
    )


def test_base_60_number_in_a_list() -> None:
    """`SOLVER.STEPS=[10,20:30]` (YAML 1.1 would read the base-60 number 1230) → refused: `20:30`
    is not an int."""
    with pytest.raises(
        ConfigError, match=r"SOLVER\.STEPS takes a list of int, got \[10, '20:30'\]"
    ):
        load_config(SHAPES_CONFIG, ["SOLVER.STEPS=[10,20:30]"])


def test_train_net_refuses_a_mapping_in_steps(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` on a file with `SOLVER.STEPS: [10, 20: 30]` → exit status 2, one line naming
    the file and the key, no traceback."""
    config = config_with(tmp_path, "SOLVER:\n  STEPS: [10, 20: 30]\n")
    result = run_tool("train_net.py", "--config-file", config, root=tiny_run.root, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "c.yaml: SOLVER.STEPS takes a list of int" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# --------------------------------------------------------------------- interpolations


def test_unset_environment_variable_in_a_file(tmp_path, monkeypatch) -> None:
    """`OUTPUT_DIR: ${oc.env:VAR}` with `VAR` unset (was an OmegaConf traceback) → refused naming
    the file, the key and the variable."""
    monkeypatch.delenv(UNSET, raising=False)
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, f"OUTPUT_DIR: ${{oc.env:{UNSET}}}/run\n"))
    message = str(error.value)
    assert "c.yaml: OUTPUT_DIR" in message and f"environment variable {UNSET} is not set" in message


def test_unset_environment_variable_in_an_override(monkeypatch) -> None:
    """`SOLVER.BASE_LR=${oc.env:VAR}` with `VAR` unset → refused naming the override and the
    variable."""
    monkeypatch.delenv(UNSET, raising=False)
    with pytest.raises(ConfigError) as error:
        load_config(SHAPES_CONFIG, [f"SOLVER.BASE_LR=${{oc.env:{UNSET}}}"])
    assert str(error.value).startswith(f"override 'SOLVER.BASE_LR=${{oc.env:{UNSET}}}'")
    assert f"environment variable {UNSET} is not set" in str(error.value)


def test_environment_variable_of_the_wrong_type(monkeypatch) -> None:
    """`SOLVER.MAX_ITER=${oc.env:VAR}` with `VAR=many` → refused when loaded, naming the key and
    the value."""
    monkeypatch.setenv("DETKIT_TEST_ITERS", "many")
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER takes an int, got 'many'"):
        load_config(SHAPES_CONFIG, ["SOLVER.MAX_ITER=${oc.env:DETKIT_TEST_ITERS}"])


def test_written_config_holds_the_values_used(tmp_path, monkeypatch) -> None:
    """A config with `${oc.env:…}` interpolations (was written to `config.yaml` as written, not as
    used) → the run's `config.yaml` holds the values they resolved to."""
    monkeypatch.setenv("DETKIT_TEST_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("DETKIT_TEST_LR", "0.02")
    cfg = load_config(
        config_with(tmp_path, "OUTPUT_DIR: ${oc.env:DETKIT_TEST_RUN}\n"),
        ["SOLVER.BASE_LR=${oc.env:DETKIT_TEST_LR}"],
    )
    monkeypatch.setenv("DETKIT_TEST_LR", "0.5")  # later changes do not move the loaded config
    write_config(cfg, tmp_path)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["OUTPUT_DIR"] == str(tmp_path / "run")
    assert written["SOLVER"]["BASE_LR"] == 0.02 and cfg.SOLVER.BASE_LR == 0.02


def test_interpolation_bomb(tmp_path) -> None:
    """Nine levels of nine `${…}` references to other values (a bomb without YAML aliases) →
    refused at once: only `${oc.env:VAR}` is read."""
    entry = ["A0: [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        reference = f"'${{DATASETS.REGISTER[0].A{level - 1}}}'"
        entry.append(f"A{level}: [{', '.join([reference] * 9)}]")
    config = config_with(tmp_path, register("{NAME: b, FORMAT: coco, " + ", ".join(entry) + "}"))
    with finishes_within(5), pytest.raises(ConfigError) as error:
        load_config(config)
    assert "only ${oc.env:VAR}" in str(error.value) and "DATASETS.REGISTER" in str(error.value)


def test_resolver_that_parses_yaml(tmp_path) -> None:
    """`${oc.create:…}`, a resolver that would parse YAML (and its aliases) → refused naming the
    key."""
    config = config_with(tmp_path, "OUTPUT_DIR: \"${oc.create:'[&a [1], *a]'}\"\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: OUTPUT_DIR: .*only \$\{oc\.env:VAR\}"):
        load_config(config)


def test_train_net_refuses_an_unset_variable(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` with `OUTPUT_DIR=${oc.env:VAR}` and `VAR` unset → exit status 2, one line
    naming the key and the variable, nothing written."""
    assert UNSET not in os.environ
    overrides = tiny_run.overrides(tmp_path / "out", OUTPUT_DIR=f"${{oc.env:{UNSET}}}/out")
    result = run_tool(
        "train_net.py", "--config-file", SHAPES_CONFIG, *overrides, root=tiny_run.root, timeout=60
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"OUTPUT_DIR: ${{oc.env:{UNSET}}}/out" in result.stderr
    assert f"environment variable {UNSET} is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ DATASETS.REGISTER


def test_worked_example_from_another_folder(tmp_path, monkeypatch) -> None:
    """The worked example of docs/datasets.md run from another folder (was "NUM_CLASSES is 0 …
    no class names are known") → refused naming the entry, `JSON_FILE` and the path it resolved
    to from the working directory."""
    (tmp_path / "my_data").mkdir()
    coco_json(tmp_path / "my_data" / "train.json", [{"id": 1, "name": "circle"}])
    config = config_with(
        tmp_path,
        register(
            "{NAME: wx_train, FORMAT: coco, JSON_FILE: my_data/train.json, "
            "IMAGE_ROOT: my_data/images}",
            "  TRAIN: [wx_train]",
            "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0",
        ),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError) as error:
        set_up(config)
    message = str(error.value)
    assert "DATASETS.REGISTER[0] (wx_train): JSON_FILE my_data/train.json" in message
    assert str(elsewhere / "my_data" / "train.json") in message and "working directory" in message
    assert "no class names are known" not in message


def test_train_net_from_another_folder(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` on a config declaring a COCO file by a path relative to another folder → exit
    status 2, one line naming the resolved path, nothing written."""
    config = config_with(
        tmp_path,
        register(
            "{NAME: wx_train, FORMAT: coco, JSON_FILE: my_data/train.json, IMAGE_ROOT: my_data}",
            "  TRAIN: [wx_train]",
            "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0",
        ),
    )
    overrides = [o for o in tiny_run.overrides(tmp_path / "out") if "DATASETS.TRAIN=" not in o]
    result = run_tool("train_net.py", "--config-file", config, *overrides, root=tiny_run.root)
    assert result.returncode == 2, result.stderr[-2000:]
    resolved = Path(__file__).resolve().parents[2] / "my_data" / "train.json"  # run_tool's cwd
    assert "JSON_FILE my_data/train.json" in result.stderr and str(resolved) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_train_net_checks_the_files_of_a_named_dataset(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` whose test set is declared with a missing `JSON_FILE` (and `NUM_CLASSES` given,
    so no class name is read from it) → exit status 2 before any work, naming the file."""
    config = config_with(
        tmp_path,
        register(f"{{NAME: wx_test, FORMAT: coco, JSON_FILE: {tmp_path / 'gone.json'}, "
                 f"IMAGE_ROOT: {tmp_path}}}"),
    )  # fmt: skip
    overrides = [o for o in tiny_run.overrides(tmp_path / "out") if "DATASETS.TEST" not in o]
    overrides += ["DATASETS.TEST=[wx_test]", "DATASETS.PROPOSAL_FILES_TEST=[]"]
    result = run_tool("train_net.py", "--config-file", config, *overrides, root=tiny_run.root)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"JSON_FILE {tmp_path / 'gone.json'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: os.mkfifo(p), "is not a regular file"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00\x81"), "not a JSON text file"),
        (lambda p: p.write_text("[]"), "not a COCO instances file"),
        (lambda p: p.write_text('{"images": [}'), "not valid JSON"),
    ],
    ids=["folder", "FIFO", "binary", "JSON list", "broken JSON"],
)
def test_unusable_json_file(tmp_path, make, expected: str) -> None:
    """A `JSON_FILE` that is a folder, a FIFO, binary, a JSON list or broken JSON, with
    `NUM_CLASSES: 0` (was "no class names are known") → refused naming the entry and the file's
    problem; a FIFO is never opened."""
    make(tmp_path / "x.json")
    config = config_with(
        tmp_path,
        register(
            f"{{NAME: wx_bad, FORMAT: coco, JSON_FILE: {tmp_path / 'x.json'}, "
            f"IMAGE_ROOT: {tmp_path}}}",
            "  TRAIN: [wx_bad]",
            "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0",
        ),
    )
    with pytest.raises(ConfigError) as error:
        set_up(config)
    assert "DATASETS.REGISTER[0] (wx_bad): JSON_FILE" in str(error.value)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "entry, expected",
    [
        (
            "{NAME: 123, FORMAT: coco, JSON_FILE: a.json, IMAGE_ROOT: i}",
            "NAME takes text, got 123 (int)",
        ),
        (
            "{NAME: v, FORMAT: pascal_voc, DIRNAME: d, SPLIT: train, YEAR: abc}",
            "YEAR takes a year (an integer such as 2007), got 'abc'",
        ),
        (
            "{NAME: v, FORMAT: pascal_voc, DIRNAME: d, SPLIT: train, CLASS_NAMES: circle}",
            "CLASS_NAMES takes a list of names, e.g. [circle], got 'circle'",
        ),
        (
            "{NAME: v, FORMAT: coco, JSON_FILE: [a.json], IMAGE_ROOT: i}",
            "JSON_FILE takes a path, got ['a.json'] (list)",
        ),
    ],
    ids=["NAME: 123", "YEAR: abc", "CLASS_NAMES: circle", "JSON_FILE: [a.json]"],
)
def test_entry_field_of_the_wrong_type(tmp_path, entry: str, expected: str) -> None:
    """A `DATASETS.REGISTER` entry with `NAME: 123`, `YEAR: abc` (were crashes), `CLASS_NAMES:
    circle` (was split into letters) or a list as a path → refused naming the entry and field."""
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, register(entry)))
    assert f"c.yaml: DATASETS.REGISTER[0]: {expected}" in str(error.value)


def test_format_in_capitals(tmp_path, forget) -> None:
    """`FORMAT: COCO` (was refused, though field names are case-insensitive) → read as `coco`."""
    forget.append("wx_caps")
    coco_json(tmp_path / "a.json", [{"id": 1, "name": "cat"}])
    config = config_with(
        tmp_path,
        register(
            f"{{name: wx_caps, Format: COCO, json_file: {tmp_path / 'a.json'}, "
            f"image_root: {tmp_path}}}",
            "  TRAIN: [wx_caps]",
            "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0",
        ),
    )
    assert list(set_up(config).MODEL.ROI_HEADS.CLASS_NAMES) == ["cat"]
    assert MetadataCatalog.get("wx_caps").get("evaluator_type") == "coco"


def test_categories_inside_info(tmp_path, forget) -> None:
    """A COCO file whose `info` (after the top-level `categories`) holds a `categories` list (was
    where the class names came from) → the names of the top-level `categories`."""
    forget.append("wx_info")
    (tmp_path / "a.json").write_text(
        '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "right"}], '
        '"info": {"categories": [{"id": 1, "name": "wrong"}]}}'
    )
    config = config_with(
        tmp_path,
        register(
            f"{{NAME: wx_info, FORMAT: coco, JSON_FILE: {tmp_path / 'a.json'}, "
            f"IMAGE_ROOT: {tmp_path}}}",
            "  TRAIN: [wx_info]",
            "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 0",
        ),
    )
    assert list(set_up(config).MODEL.ROI_HEADS.CLASS_NAMES) == ["right"]
