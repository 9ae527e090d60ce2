"""tools/compress_fc.py as a user runs it: the relative error it prints is the truncated SVD's,
the overrides it prints (a rank of 0 for a layer it leaves whole) load the checkpoint it wrote,
and weights that leave part of the model uninitialised are used only with
--allow-partial-weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config, parse_overrides
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
SMALL = ["MODEL.SMALL_CONVNET.CHANNELS=[8, 8]", "MODEL.ROI_BOX_HEAD.FC_DIM=24"]


def compress_fc(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "compress_fc.py"), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A shapes model (small) with its checkpoint, standing for trained weights."""
    folder = tmp_path_factory.mktemp("compress_fc")
    torch.manual_seed(0)
    model = build_model(load_config(SHAPES, SMALL))
    DetectionCheckpointer(model, str(folder)).save("model_trained")
    return model, folder / "model_trained.pth"


def relative_error(weight: torch.Tensor, rank: int) -> float:
    """‖W - W_r‖ / ‖W‖ of the best rank-r approximation: the dropped singular values' share."""
    singular = torch.linalg.svdvals(weight.double())
    return float(singular[rank:].norm() / singular.norm())


def test_one_layer_compressed_prints_its_error_and_overrides_that_load(trained, tmp_path) -> None:
    model, weights = trained
    output = tmp_path / "svd.pth"
    result = compress_fc(
        "--config-file", SHAPES, "--ranks", "fc6=5", "--output", output, *SMALL,
        f"MODEL.WEIGHTS={weights}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = relative_error(model.roi_heads.box_head.fc6.weight.detach(), 5)
    printed = re.search(r"fc6: rank 5, relative error ([0-9.]+)", result.stdout)
    assert printed and float(printed.group(1)) == pytest.approx(expected, abs=1e-4)
    assert 0.05 < expected < 0.95  # an error that an absolute norm would not give
    overrides = re.search(r"^\s+(MODEL\.ROI_BOX_HEAD\.SVD_RANKS=\S+) (MODEL\.WEIGHTS=\S+)$",
                          result.stdout, re.MULTILINE)  # fmt: skip
    assert overrides and overrides.group(1) == "MODEL.ROI_BOX_HEAD.SVD_RANKS=[5,0]"
    assert overrides.group(2) == f"MODEL.WEIGHTS={output}"
    cfg = load_config(SHAPES, parse_overrides([*SMALL, *overrides.groups()]))
    compressed = build_model(cfg)
    DetectionCheckpointer(compressed, allow_partial=False).load(cfg.MODEL.WEIGHTS)
    head = compressed.roi_heads.box_head
    assert head.fc6[0].weight.shape == (5, 8 * 7 * 7)
    torch.testing.assert_close(head.fc7.weight, model.roi_heads.box_head.fc7.weight)


def test_partial_weights_are_refused_unless_allowed(trained, tmp_path) -> None:
    _, weights = trained
    state = torch.load(weights, weights_only=True)["model"]
    partial = tmp_path / "partial.pth"
    torch.save({"model": {k: v for k, v in state.items() if "fc6" not in k}}, partial)
    output = tmp_path / "svd.pth"
    argv = ["--config-file", SHAPES, "--ranks", "fc7=4", "--output", output]
    refused = compress_fc(*argv, *SMALL, f"MODEL.WEIGHTS={partial}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"compress_fc: {partial}: it leaves 2 of the model's")
    assert "roi_heads.box_head.fc6.weight" in line and not output.exists()
    allowed = compress_fc(*argv, "--allow-partial-weights", *SMALL, f"MODEL.WEIGHTS={partial}")
    assert allowed.returncode == 0, allowed.stderr
    assert "roi_heads.box_head.fc6.weight" in allowed.stdout + allowed.stderr  # a warning
    assert output.is_file()
