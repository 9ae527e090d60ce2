"""tools/demo.py: PNG files of the inputs' size, folders as inputs, KEY VALUE overrides, the cap
on drawn detections, and one-line errors (exit status 2) for bad inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "Base-FastRCNN.yaml"
TINY = [
    "MODEL.BACKBONE.NAME=ResNet",
    "MODEL.RESNETS.DEPTH=18",
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "INPUT.MIN_SIZE_TEST=96",
    "INPUT.MAX_SIZE_TEST=160",
    "DATASETS.TEST=[shapes_val]",
]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo():
    return load_demo()


@pytest.fixture
def weights(tmp_path: Path) -> str:
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, TINY))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_tiny")
    return str(tmp_path / "model_tiny.pth")


def write_images(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name, (height, width) in [("wide", (96, 128)), ("tall", (112, 96))]:
        image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        cv2.rectangle(image, (20, 20), (70, 80), (40, 200, 220), cv2.FILLED)
        cv2.imwrite(str(folder / f"{name}.jpg"), image)
        paths.append(str(folder / f"{name}.jpg"))
    return paths


def test_writes_one_png_per_image(demo, weights: str, tmp_path: Path, capsys) -> None:
    inputs = write_images(tmp_path)
    out = tmp_path / "out" / "nested"
    argv = ["--output", str(out), "--confidence-threshold", "0.0", "--config-file", str(CONFIG)]
    argv += ["--min-size", "0", "--input", *inputs, *TINY, f"MODEL.WEIGHTS={weights}"]
    assert demo.main(argv) == 0  # (the overrides come after --input)
    assert sorted(p.name for p in out.iterdir()) == ["tall.png", "wide.png"]
    for path in inputs:
        written = cv2.imread(str(out / f"{Path(path).stem}.png"))
        assert written.shape == cv2.imread(path).shape
        assert not np.array_equal(written, cv2.imread(path)), "nothing was drawn"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("detections drawn" in line for line in lines)


def test_missing_image_is_named(demo, weights: str, tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing.png")
    argv = ["--config-file", str(CONFIG), "--input", missing, "--output", str(tmp_path)]
    assert demo.main([*argv, *TINY, f"MODEL.WEIGHTS={weights}"]) == 2
    err = capsys.readouterr().err
    assert missing in err and "Traceback" not in err


def test_bad_config_key_gives_the_config_error(demo, tmp_path: Path, capsys) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    argv = ["--config-file", str(CONFIG), "--input", str(tmp_path / "x.png")]
    argv += ["--output", str(tmp_path)]
    assert demo.main([*argv, "MODEL.ROI_HEADS.NUM_CLASES=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key MODEL.ROI_HEADS.NUM_CLASES" in err
    assert "did you mean MODEL.ROI_HEADS.NUM_CLASSES" in err


def test_missing_weights_file_is_named(demo, tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nope.pth")
    (tmp_path / "x.png").write_bytes(b"")  # refused later, when read
    argv = ["--config-file", str(CONFIG), "--input", str(tmp_path / "x.png")]
    assert demo.main([*argv, "--output", str(tmp_path), *TINY, f"MODEL.WEIGHTS={missing}"]) == 2
    assert missing in capsys.readouterr().err


def test_small_pictures_are_enlarged(demo, weights: str, tmp_path: Path) -> None:
    inputs = write_images(tmp_path)
    out = tmp_path / "out"
    argv = ["--output", str(out), "--confidence-threshold", "0.0", "--config-file", str(CONFIG)]
    assert demo.main([*argv, "--min-size", "224", "--input", *inputs, *TINY,
                      f"MODEL.WEIGHTS={weights}"]) == 0  # fmt: skip
    wide = cv2.imread(str(out / "wide.png"))  # 96 x 128 -> 224 x 299
    tall = cv2.imread(str(out / "tall.png"))  # 112 x 96 -> 261 x 224
    assert wide.shape == (224, round(128 * 224 / 96), 3)
    assert tall.shape == (round(112 * 224 / 96), 224, 3)


def test_a_folder_stands_for_its_images_and_key_value_pairs_work(
    demo, weights: str, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_images(folder)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["--config-file", str(CONFIG), "--min-size", "0", "--input", str(folder)]
    pairs = [word for override in TINY for word in override.split("=", 1)]
    assert demo.main([*argv, "--output", str(out), "MODEL.WEIGHTS", weights, *pairs]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tall.png", "wide.png"]


def test_max_detections_caps_what_is_drawn(demo, weights: str, tmp_path: Path, capsys) -> None:
    inputs = write_images(tmp_path)
    argv = ["--config-file", str(CONFIG), "--confidence-threshold", "0.0", "--min-size", "0"]
    argv += ["--output", str(tmp_path / "out"), "--max-detections", "1", "--input", inputs[0]]
    assert demo.main([*argv, *TINY, f"MODEL.WEIGHTS={weights}"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    found = int(line.split(" of ")[1].split()[0])
    assert ": 1 of " in line and found > 1, line


def test_missing_inputs_and_empty_folders_are_named_together(demo, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    missing = str(tmp_path / "missing.png")
    argv = ["--config-file", str(CONFIG), "--output", str(tmp_path / "out")]
    assert demo.main([*argv, "--input", missing, str(tmp_path / "empty"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and missing in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "out").exists()


def test_partial_weights_are_refused_with_advice_the_demo_can_follow(
    demo, weights: str, tmp_path: Path, capsys
) -> None:
    """Weights that leave the predictor uninitialised: one line naming them, advising what the
    demo itself accepts (the weights' own config), not an option of another tool."""
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["model"] = {
        k: v for k, v in checkpoint["model"].items() if not k.startswith("roi_heads.box_predictor")
    }
    partial = tmp_path / "partial.pth"
    torch.save(checkpoint, partial)
    inputs = write_images(tmp_path)
    argv = ["--config-file", str(CONFIG), "--output", str(tmp_path / "out"), "--input", *inputs]
    assert demo.main([*argv, *TINY, f"MODEL.WEIGHTS={partial}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(partial) in err and "box_predictor" in err, err
    assert "--allow-partial-weights" not in err and "train_net" not in err, err
    assert "--config-file" in err and "config.yaml" in err, err
