"""tools/export_model.py: the exported program, saved and loaded back, detects what the eager
model detects, on proposal counts other than the one it was traced with; the check it runs
before writing can fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.engine import parse_overrides
from detkit.modeling import build_model
from detkit.utils.analysis import SingleImageDetector, random_boxes

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
SMALL = ["MODEL.SMALL_CONVNET.CHANNELS", "[8, 16]", "MODEL.ROI_BOX_HEAD.FC_DIM", "32"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "export_model", REPO / "tools" / "export_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["export_model"] = module
    spec.loader.exec_module(module)
    return module


def saved_model(tmp_path: Path, seed: int = 0):
    cfg = load_config(CONFIG, parse_overrides(SMALL))
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save(f"m{seed}")
    return model, tmp_path / f"m{seed}.pth"


def test_the_exported_program_detects_as_the_model(tool, tmp_path, one_thread) -> None:
    model, weights = saved_model(tmp_path)
    output = tmp_path / "model.pt2"
    argv = ["--config-file", str(CONFIG), "--output", str(output), "--image-size", "96", "128",
            "--num-proposals", "40", *SMALL, "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    assert tool.main(argv) == 0
    program = torch.export.load(str(output)).module()
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    for count in (7, 63):  # neither the traced count nor its half
        boxes = random_boxes(count, 96, 128, seed=count)
        got = program(image, boxes)
        with torch.no_grad():
            expected = SingleImageDetector(model)(image, boxes)
        assert len(expected[0]) > 0  # random weights of 3 classes still pass the threshold
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


def test_the_check_sees_a_program_of_other_weights(tool, tmp_path, one_thread) -> None:
    model, _ = saved_model(tmp_path, seed=0)
    other, _ = saved_model(tmp_path, seed=1)
    program, (image, boxes) = tool.export_detector(model, 96, 128, 30)
    assert tool.mismatch(program, model, image, boxes) == ""
    assert tool.mismatch(program, other, image, boxes) != ""


def test_export_without_weights_is_refused(tool, tmp_path, capsys) -> None:
    argv = ["--config-file", str(CONFIG), "--output", str(tmp_path / "m.pt2"), *SMALL]
    assert tool.main(argv) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    assert not (tmp_path / "m.pt2").exists()
