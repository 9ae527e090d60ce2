"""tools/export_model.py: the archive it writes holds no pickle, and the exported program,
loaded with the documented call in a fresh interpreter, detects what the eager model detects on
proposal counts other than the one it was traced with; the check it runs before writing can
fail."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config, parse_overrides
from detkit.export import SingleImageDetector, load, mismatch, random_boxes
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
SMALL = ["MODEL.SMALL_CONVNET.CHANNELS", "[8, 16]", "MODEL.ROI_BOX_HEAD.FC_DIM", "32"]
HEIGHT, WIDTH = 96, 128
# the documented Python call, in an interpreter that imported nothing else
RUN_EXPORTED = """
import sys, torch
from detkit.export import load
program = load(sys.argv[1]).module()
inputs = torch.load(sys.argv[2], weights_only=True)
torch.save([program(image, boxes) for image, boxes in inputs], sys.argv[3])
"""


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "export_model", REPO / "tools" / "export_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["export_model"] = module
    spec.loader.exec_module(module)
    return module


def saved_model(folder: Path, seed: int = 0):
    cfg = load_config(CONFIG, parse_overrides(SMALL))
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(folder)).save(f"model_seed{seed}")
    return model, folder / f"model_seed{seed}.pth"


@pytest.fixture(scope="module")
def exported(tool, tmp_path_factory, one_thread):
    """A tiny shapes model (random weights) and the .pt2 file the tool wrote for it."""
    folder = tmp_path_factory.mktemp("export_model")
    model, weights = saved_model(folder)
    output = folder / "model.pt2"
    argv = ["--config-file", str(CONFIG), "--output", str(output), "--image-size", str(HEIGHT),
            str(WIDTH), "--num-proposals", "40", *SMALL, "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    assert tool.main(argv) == 0
    assert sorted(p.name for p in folder.glob("*.pt2*")) == ["model.pt2"]  # no leftovers
    return model, output


def test_the_written_archive_holds_no_pickle(exported) -> None:
    _, output = exported
    with zipfile.ZipFile(output) as archive:
        sizes = {info.filename.split("/", 1)[1]: info.file_size for info in archive.infolist()}
        root = archive.namelist()[0].split("/")[0]
        for config in ("data/weights/model_weights_config.json",
                       "data/constants/model_constants_config.json"):  # fmt: skip
            payloads = json.loads(archive.read(f"{root}/{config}"))["config"]
            assert payloads and not any(meta["use_pickle"] for meta in payloads.values())
    assert sizes["data/sample_inputs/model.pt"] == 0  # torch pickles example inputs
    assert not [name for name in sizes if name.startswith(("data/aotinductor", "extra/"))]


def test_the_documented_call_runs_the_program_in_a_fresh_interpreter(
    exported, tmp_path
) -> None:
    model, output = exported
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    inputs = [(image, random_boxes(count, HEIGHT, WIDTH, seed=count)) for count in (7, 63)]
    torch.save(inputs, tmp_path / "inputs.pt")  # neither the traced count nor its half
    run = subprocess.run(
        [sys.executable, "-c", RUN_EXPORTED, str(output), str(tmp_path / "inputs.pt"),
         str(tmp_path / "outputs.pt")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    outputs = torch.load(tmp_path / "outputs.pt", weights_only=True)
    for (image, boxes), got in zip(inputs, outputs, strict=True):
        with torch.no_grad():
            expected = SingleImageDetector(model)(image, boxes)
        assert len(expected[0]) > 0  # random weights of 3 classes still pass the threshold
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


def test_the_check_sees_a_program_of_other_weights(exported, tmp_path, one_thread) -> None:
    model, output = exported
    other, _ = saved_model(tmp_path, seed=1)
    program = load(output).module()
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    boxes = random_boxes(30, HEIGHT, WIDTH)
    assert mismatch(program, model, image, boxes) == ""
    assert mismatch(program, other, image, boxes) != ""


def test_export_without_weights_is_refused(tool, tmp_path, capsys) -> None:
    argv = ["--config-file", str(CONFIG), "--output", str(tmp_path / "m.pt2"), *SMALL]
    assert tool.main(argv) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    assert not (tmp_path / "m.pt2").exists()


def test_a_config_with_a_test_pyramid_is_refused_in_one_line(tmp_path) -> None:
    """The paper's multi-scale config: its test pyramid resizes outside any traceable graph, so
    the tool says so in one line (exit status 2) before reading the weights, nothing written."""
    config = REPO / "configs" / "PascalVOC" / "fast_rcnn_VGG16_multiscale.yaml"
    output = tmp_path / "m.pt2"
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "export_model.py"), "--config-file", str(config),
         "--output", str(output), "MODEL.ROI_BOX_HEAD.FC_DIM=32",
         f"MODEL.WEIGHTS={tmp_path / 'never_read.pth'}"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "export_model: the test image pyramid (TEST.MIN_SIZES=[480, 576, 688, 864, 1200]) "
        "cannot be exported or traced: it resizes each image to its scales with OpenCV, outside "
        "the graph; export the single-scale model (TEST.MIN_SIZES=[]), whose detections differ"
    ]
    assert not list(tmp_path.iterdir())
