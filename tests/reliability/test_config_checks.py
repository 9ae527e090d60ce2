"""Configs: everything that can be checked is checked before any work starts.

`detkit.config.check_config` runs when `train_net` starts, before any process, model or file:
it reports every problem at once, one per line, each naming the key and the value. Sizes,
counts and periods must be positive (0 means "off" only where a key's documentation says so:
`TEST.EVAL_PERIOD`, `DATALOADER.NUM_WORKERS`, `SOLVER.WARMUP_ITERS`); every dataset named in
`DATASETS.TRAIN` and `DATASETS.TEST` must be registered; a local `MODEL.WEIGHTS` must be a
non-empty file; `MODEL.PIXEL_STD` holds one positive divisor per `MODEL.PIXEL_MEAN` entry.
YAML files are read with a safe loader that also refuses a key given twice in one mapping
(plain YAML keeps the last silently), naming the file and both lines.
`MODEL.ROI_HEADS.NUM_CLASSES` is checked against the classes of the training and test data
when they are loaded, before the model sees them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import SHAPES_CONFIG, TinyRun, run_tool

from detkit.config import ConfigError, check_config, load_config
from detkit.data import MetadataCatalog, setup_datasets
from detkit.data.loaders import evaluation_dataset_dicts, train_dataset_dicts


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems_of(*overrides: str, world_size: int = 1) -> str:
    cfg = load_config(SHAPES_CONFIG, list(overrides))
    with pytest.raises(ConfigError) as error:
        check_config(cfg, world_size)
    return str(error.value)


def test_two_solver_blocks(tmp_path) -> None:
    """A YAML file with two `SOLVER:` blocks → refused, naming the file, the key and both lines."""
    config = write(
        tmp_path / "c.yaml", "SOLVER:\n  BASE_LR: 0.1\nMODEL: {}\nSOLVER:\n  MAX_ITER: 5\n"
    )
    with pytest.raises(
        ConfigError, match=r"c\.yaml:4: 'SOLVER' is given twice \(first at line 1\)"
    ):
        load_config(config)


def test_duplicate_nested_key(tmp_path) -> None:
    """A key given twice inside a section → refused with its line."""
    config = write(
        tmp_path / "c.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n    NUM_CLASSES: 4\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml:4: 'NUM_CLASSES' is given twice"):
        load_config(config)


def test_duplicate_key_in_a_base_file(tmp_path) -> None:
    """A duplicate key in a `_BASE_` file → refused, naming the base file, not the child."""
    write(tmp_path / "base.yaml", "SEED: 1\nSEED: 2\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml:2: 'SEED'"):
        load_config(child)


def test_python_tag_in_yaml(tmp_path) -> None:
    """A YAML tag that would build a Python object (`!!python/object/apply:os.system`) → refused as
    invalid YAML; nothing runs."""
    marker = tmp_path / "ran"
    config = write(
        tmp_path / "c.yaml", f"SEED: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not marker.exists()


def test_binary_config_file(tmp_path) -> None:
    """A config file that is not text (binary bytes) → refused naming the file."""
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\xff\xfe\x00\x81SOLVER")
    with pytest.raises(ConfigError, match=r"c\.yaml"):
        load_config(config)


def test_config_file_that_is_a_list(tmp_path) -> None:
    """A YAML file holding a list instead of keys → refused naming the file."""
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path / "c.yaml", "- SOLVER\n- MODEL\n"))


def test_base_chain_loop(tmp_path) -> None:
    """Two config files that are each other's `_BASE_` → refused, showing the loop."""
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ chain loops"):
        load_config(tmp_path / "a.yaml")


def test_missing_base(tmp_path) -> None:
    """A `_BASE_` naming a file that does not exist → refused, naming both."""
    with pytest.raises(ConfigError, match=r"c\.yaml: _BASE_ file 'nothere\.yaml' not found"):
        load_config(write(tmp_path / "c.yaml", "_BASE_: nothere.yaml\n"))


def test_misspelt_key() -> None:
    """A misspelt key (`SOLVER.BASE_LT`) → refused with the closest valid key."""
    with pytest.raises(ConfigError, match=r"did you mean SOLVER\.BASE_LR"):
        load_config(SHAPES_CONFIG, ["SOLVER.BASE_LT=0.1"])


def test_value_of_the_wrong_type() -> None:
    """`SOLVER.MAX_ITER=abc` → refused, saying the key takes an int."""
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER takes an int"):
        load_config(SHAPES_CONFIG, ["SOLVER.MAX_ITER=abc"])


@pytest.mark.parametrize("value", ["maybe", "2", "[true]"])
def test_boolean_that_is_not_a_boolean(value: str) -> None:
    """A boolean key given something else (`MODEL.CHANNELS_LAST=maybe`) → refused, saying it takes a
    bool."""
    with pytest.raises(ConfigError, match=r"MODEL\.CHANNELS_LAST takes a bool"):
        load_config(SHAPES_CONFIG, [f"MODEL.CHANNELS_LAST={value}"])


@pytest.mark.parametrize(
    "key",
    ["SOLVER.CHECKPOINT_PERIOD", "SOLVER.LOG_PERIOD", "SOLVER.IMS_PER_BATCH", "SOLVER.BASE_LR"],
)
def test_zero_period_or_batch(key: str) -> None:
    """A period, batch size or learning rate of 0 (was `ZeroDivisionError`, or a hang for
    `IMS_PER_BATCH=0`) → refused before any work."""
    assert f"{key} must be positive, got 0" in problems_of(f"{key}=0")


def test_negative_batch() -> None:
    """`SOLVER.IMS_PER_BATCH=-2` → refused."""
    assert "SOLVER.IMS_PER_BATCH must be positive, got -2" in problems_of("SOLVER.IMS_PER_BATCH=-2")


@pytest.mark.parametrize("sizes", ["[0]", "[160, -1]", "[]"])
def test_training_image_sizes(sizes: str) -> None:
    """`INPUT.MIN_SIZE_TRAIN` with a zero, negative or no
    size (was an OpenCV assertion) → refused."""
    assert "INPUT.MIN_SIZE_TRAIN must list positive" in problems_of(f"INPUT.MIN_SIZE_TRAIN={sizes}")


@pytest.mark.parametrize(
    "key", ["INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST"]
)
def test_zero_image_size(key: str) -> None:
    """An image size of 0 → refused naming the key."""
    assert f"{key} must be positive" in problems_of(f"{key}=0")


@pytest.mark.parametrize(
    "key",
    ["MODEL.ROI_BOX_HEAD.FC_DIM", "TEST.DETECTIONS_PER_IMAGE"],
)
def test_zero_model_sizes(key: str) -> None:
    """A layer width or detection cap of 0 → refused naming the key."""
    assert f"{key} must be positive" in problems_of(f"{key}=0")


def test_negative_worker_count() -> None:
    """`DATALOADER.NUM_WORKERS=-1` → refused (0 is allowed:
    it means loading in the main process)."""
    assert "DATALOADER.NUM_WORKERS must be 0 or more" in problems_of("DATALOADER.NUM_WORKERS=-1")


def test_zero_processes() -> None:
    """A run of 0 processes (`--num-gpus 0`, was `ZeroDivisionError`) → refused."""
    assert "at least one process" in problems_of(world_size=0)


def test_batch_that_does_not_divide() -> None:
    """3 images per batch over 2 processes → refused."""
    assert "do not divide among 2 processes" in problems_of("SOLVER.IMS_PER_BATCH=3", world_size=2)


def test_unknown_test_dataset() -> None:
    """A typo in `DATASETS.TEST` (was found only after the whole training run) → refused at the
    start with the closest name."""
    message = problems_of("DATASETS.TEST=[shapes_vall]")
    assert (
        "DATASETS.TEST: no dataset named 'shapes_vall' is registered; did you mean 'shapes_val'?"
        in message
    )


def test_unknown_training_dataset() -> None:
    """An unregistered `DATASETS.TRAIN` name → refused, listing what is registered."""
    message = problems_of("DATASETS.TRAIN=[zzz_unknown]")
    assert "DATASETS.TRAIN: no dataset named 'zzz_unknown'" in message and "shapes_val" in message


def test_proposal_files_count() -> None:
    """Two proposal files for one training dataset → refused: one per dataset."""
    message = problems_of("DATASETS.PROPOSAL_FILES_TRAIN=[a.pkl, b.pkl]")
    assert "DATASETS.PROPOSAL_FILES_TRAIN gives 2 files for the 1 datasets" in message


def test_weights_that_are_a_directory(tmp_path) -> None:
    """A directory as `MODEL.WEIGHTS` (was "not found") → refused: it is a directory."""
    assert "is a directory" in problems_of(f"MODEL.WEIGHTS={tmp_path}")


def test_weights_that_do_not_exist(tmp_path) -> None:
    """`MODEL.WEIGHTS` naming a missing file → refused at the start, naming it."""
    assert f"MODEL.WEIGHTS: no such file {tmp_path / 'x.pth'}" in problems_of(
        f"MODEL.WEIGHTS={tmp_path / 'x.pth'}"
    )


def test_empty_weights_file(tmp_path) -> None:
    """An empty (0-byte) `MODEL.WEIGHTS` file (was a bare `EOFError`) → refused, naming it."""
    empty = tmp_path / "empty.pth"
    empty.touch()
    assert "is empty (0 bytes)" in problems_of(f"MODEL.WEIGHTS={empty}")


def test_every_problem_at_once(tmp_path) -> None:
    """Four mistakes in one config → all four reported, one per line, in one error."""
    message = problems_of(
        "SOLVER.LOG_PERIOD=0",
        "DATASETS.TEST=[nope]",
        "INPUT.MIN_SIZE_TRAIN=[0]",
        f"MODEL.WEIGHTS={tmp_path}",
    )
    assert message.startswith("4 problems:")
    assert len(message.splitlines()) == 5


def test_one_class_too_few(tiny_shapes) -> None:
    """`NUM_CLASSES` one smaller than the training data's classes (was: the last class silently
    trained as background) → refused when the data is loaded, with the right value."""
    cfg = load_config(
        SHAPES_CONFIG,
        [f"DATASETS.TRAIN=[{tiny_shapes.name}]", "DATASETS.PROPOSAL_FILES_TRAIN=[]",
         "MODEL.ROI_HEADS.NUM_CLASSES=2"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"NUM_CLASSES=2 but dataset 'tiny_shapes' has 3 classes"):
        train_dataset_dicts(cfg)


def test_one_class_too_many(tiny_shapes) -> None:
    """`NUM_CLASSES` larger than the data's classes → refused (the extra class could never be learnt
    or scored)."""
    cfg = load_config(
        SHAPES_CONFIG,
        [f"DATASETS.TRAIN=[{tiny_shapes.name}]", "DATASETS.PROPOSAL_FILES_TRAIN=[]",
         "MODEL.ROI_HEADS.NUM_CLASSES=4"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"set MODEL\.ROI_HEADS\.NUM_CLASSES=3"):
        train_dataset_dicts(cfg)


def test_test_data_with_other_classes(tiny_shapes) -> None:
    """A test dataset whose classes differ from the model's (4 names against the 3 it was
    trained on) → refused before evaluating, showing both lists."""
    name = "reliability_other_classes"
    from detkit.data import DatasetCatalog

    DatasetCatalog.register(name, lambda: DatasetCatalog.get(tiny_shapes.name))
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c", "d"])
    try:
        overrides = [f"DATASETS.TEST=[{name}]", "DATASETS.PROPOSAL_FILES_TEST=[]"]
        # set up as every tool does: the model's classes are those of DATASETS.TRAIN
        cfg = setup_datasets(load_config(SHAPES_CONFIG, overrides))
        with pytest.raises(ConfigError, match=f"are not the classes of dataset '{name}'"):
            evaluation_dataset_dicts(cfg, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_train_net_refuses_a_test_typo_before_writing(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` with a typo in `DATASETS.TEST` → exit status 2, one line on stderr, no traceback,
    nothing written."""
    output = tmp_path / "out"
    result = run_tool(
        "train_net.py", "--config-file", SHAPES_CONFIG,
        *tiny_run.overrides(output, DATASETS__TEST="[shapes_vall]"), root=tiny_run.root,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "shapes_vall" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


def test_train_net_refuses_a_duplicate_block(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` on a config with two `SOLVER:` blocks
    → exit status 2 naming the file and line."""
    config = write(
        tmp_path / "c.yaml",
        f"_BASE_: {SHAPES_CONFIG}\nSOLVER:\n  BASE_LR: 0.1\nSOLVER:\n  MAX_ITER: 5\n",
    )
    result = run_tool("train_net.py", "--config-file", config, root=tiny_run.root)
    assert result.returncode == 2
    assert "c.yaml:4: 'SOLVER' is given twice" in result.stderr


def test_cuda_on_a_machine_without_one(monkeypatch) -> None:
    """`MODEL.DEVICE=cuda` on a machine without a CUDA device → refused before any work, naming
    `auto` and `cpu`."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "MODEL.DEVICE=cuda but this machine has no CUDA device" in problems_of(
        "MODEL.DEVICE=cuda"
    )


def test_unknown_device_name() -> None:
    """`MODEL.DEVICE=gpu` → refused, listing the names that work."""
    assert "MODEL.DEVICE must be auto, cpu, cuda or cuda:N, got 'gpu'" in problems_of(
        "MODEL.DEVICE=gpu"
    )


def test_unknown_bad_image_policy() -> None:
    """`DATALOADER.BAD_IMAGE_POLICY=ignore` → refused at the start (not when the loader is
    built), listing `stop` and `skip`."""
    assert "DATALOADER.BAD_IMAGE_POLICY must be one of stop, skip, got 'ignore'" in problems_of(
        "DATALOADER.BAD_IMAGE_POLICY=ignore"
    )


def test_negative_bounds() -> None:
    """A negative `DATALOADER.MAX_BAD_IMAGES` or `SOLVER.MAX_NONFINITE_STEPS` → refused."""
    message = problems_of("DATALOADER.MAX_BAD_IMAGES=-1", "SOLVER.MAX_NONFINITE_STEPS=-2")
    assert "DATALOADER.MAX_BAD_IMAGES must be 0 or more" in message
    assert "SOLVER.MAX_NONFINITE_STEPS must be 0 or more" in message


@pytest.mark.parametrize("std", ["[0.0, 1.0, 1.0]", "[57.4, -1.0, 57.1]", "[.nan, 1.0, 1.0]"])
def test_zero_pixel_std(std: str) -> None:
    """A `MODEL.PIXEL_STD` entry of 0, negative or NaN (was a non-finite loss later blamed on the
    learning rate) → refused before any work, naming the key."""
    message = problems_of(f"MODEL.PIXEL_STD={std}")
    assert "MODEL.PIXEL_STD must hold positive numbers (each channel is divided by its entry)" in (
        message
    )


def test_pixel_mean_and_std_of_other_lengths() -> None:
    """`MODEL.PIXEL_MEAN` of 3 channels with a `MODEL.PIXEL_STD` of 2 (was a broadcasting error in
    the first forward pass) → refused naming both keys."""
    assert "MODEL.PIXEL_MEAN has 3 entries but MODEL.PIXEL_STD has 2" in problems_of(
        "MODEL.PIXEL_STD=[1.0, 1.0]"
    )


def test_train_net_refuses_a_zero_pixel_std(tiny_run: TinyRun, tmp_path) -> None:
    """`train_net` with `MODEL.PIXEL_STD=[0, 1, 1]` → exit status 2, one line naming the key,
    nothing written."""
    output = tmp_path / "out"
    result = run_tool(
        "train_net.py", "--config-file", SHAPES_CONFIG,
        *tiny_run.overrides(output, MODEL__PIXEL_STD="[0, 1, 1]"), root=tiny_run.root,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "MODEL.PIXEL_STD must hold positive numbers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not output.exists()
