"""tools/benchmark.py: the torchvision-built peer detects what detkit detects with the same
weights (one map and several, each pooler), the check refuses unequal models and a setting with
no detection to compare, the random inputs, the alternation, the stage timer and the memory
probe; a whole run writes its table and JSON, and the config's own model, run as the tool runs
it, has detections to compare and logs its phases. Small models only: speed itself is measured
by running the tool, not here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from detkit.config import load_config
from detkit.engine import parse_overrides
from detkit.modeling import build_model
from detkit.modeling.poolers import ROIPooler
from detkit.utils.timing import peak_memory_mb

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
FPN_CONFIG = REPO / "configs" / "Base-FastRCNN-FPN.yaml"
SMALL = [
    "MODEL.DEVICE=cpu",
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
]
SMALL_FPN = [
    "MODEL.DEVICE=cpu",
    "MODEL.RESNETS.DEPTH=18",
    "MODEL.FPN.OUT_CHANNELS=16",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Tiny models: one thread (see the root conftest)."""


def models_and_inputs(tool, config: Path, opts: list[str], size=(96, 128), proposals=120):
    cfg = load_config(config, parse_overrides(opts))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sample = tool.make_sample(*size, proposals, cfg.MODEL.ROI_HEADS.NUM_CLASSES, seed=3)
    sample = tool.distinct_proposals(model, sample)
    inputs = tool.detkit_inputs([sample], torch.device("cpu"))
    tool.calibrate_head(model, inputs)
    peer = tool.build_peer(cfg, model).eval()
    images, boxes, _ = tool.peer_inputs([sample], torch.device("cpu"))
    return model, peer, inputs, images, boxes


@pytest.mark.parametrize("pooler", ["ROIPool", "ROIAlign", "ROIAlignV2"])
def test_the_peer_detects_what_detkit_detects_on_one_map(tool, pooler: str) -> None:
    opts = [*SMALL, f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler}"]
    model, peer, inputs, images, boxes = models_and_inputs(tool, SHAPES_CONFIG, opts)
    with torch.no_grad():
        mine = model(inputs)[0]["instances"]
        theirs = peer(images, boxes)[0]
    assert len(mine) > 10  # the calibrated scores leave the post-processing real work
    assert tool.detection_mismatch(mine, theirs) is None


@pytest.mark.parametrize("pooler", ["ROIAlign", "ROIAlignV2"])
def test_the_peer_detects_what_detkit_detects_on_a_feature_pyramid(tool, pooler: str) -> None:
    opts = [*SMALL_FPN, f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler}"]
    model, peer, inputs, images, boxes = models_and_inputs(
        tool, FPN_CONFIG, opts, size=(128, 160), proposals=200
    )
    with torch.no_grad():
        mine = model(inputs)[0]["instances"]
        theirs = peer(images, boxes)[0]
    assert len(mine) > 10
    assert tool.detection_mismatch(mine, theirs) is None


def test_the_aligned_multi_level_peer_pools_as_detkits_pooler(tool) -> None:
    torch.manual_seed(1)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    maps = {f"p{i}": torch.randn(2, 3, 128 // 2**i, 160 // 2**i) for i in range(4)}
    # sides 40, 150, 300 and 500 px fall on P2, P3, P4 and P5 by the canonical 224 rule
    sized = torch.tensor([[5.0, 5, 45, 45], [10, 10, 160, 160], [0, 0, 300, 300], [0, 0, 500, 500]])
    boxes = [torch.cat([sized, tool.random_boxes(40, 512, 640, seed=s)]) for s in (0, 1)]
    pooler = tool.AlignedMultiScaleRoIAlign(list(maps), scales, (7, 7), 2)
    assert pooler.mapper([sized])[:4].tolist() == [0, 1, 2, 3]
    mine = ROIPooler(7, scales, 2, "ROIAlignV2")(list(maps.values()), boxes)
    torch.testing.assert_close(pooler(maps, boxes, None), mine)


def test_the_check_refuses_models_that_differ(tool) -> None:
    model, peer, inputs, images, boxes = models_and_inputs(tool, SHAPES_CONFIG, SMALL)
    with torch.no_grad():
        peer.roi_heads.box_predictor.cls_score.weight[1:].mul_(1.5)
        mine = model(inputs)[0]["instances"]
        theirs = peer(images, boxes)[0]
    assert tool.detection_mismatch(mine, theirs) is not None


def test_a_box_head_without_a_peer_is_refused(tool) -> None:
    cfg = load_config(SHAPES_CONFIG, parse_overrides([*SMALL, "MODEL.ROI_BOX_HEAD.NUM_FC=1"]))
    with pytest.raises(ValueError, match="two-layer FastRCNNFCHead"):
        tool.build_peer(cfg, build_model(cfg))


def test_samples_have_foreground_proposals_inside_the_image(tool) -> None:
    sample = tool.make_sample(60, 80, 40, num_classes=3, seed=0)
    assert sample.image.shape == (3, 60, 80) and sample.image.dtype == torch.uint8
    assert sample.proposals.shape == (40, 4)
    boxes = sample.proposals
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    from torchvision.ops import box_iou

    best = box_iou(boxes[:10], sample.gt_boxes).max(dim=1).values
    assert (best > 0.5).sum() >= 5  # the jittered quarter mostly overlaps its object
    assert set(sample.gt_classes.tolist()) <= {0, 1, 2}


def test_alternate_rotates_the_order_after_a_warm_up(tool, monkeypatch) -> None:
    calls: list[str] = []
    durations = {"a": iter([0, 5, 1, 9]), "b": iter([0, 2, 2, 2])}  # warm-up first

    def fake_clock(device):
        return lambda fn: fn()

    monkeypatch.setattr(tool, "clock", fake_clock)

    def timed(name):
        def run():
            calls.append(name)
            return 1000.0 * next(durations[name])

        return run

    times = tool.alternate({"a": timed("a"), "b": timed("b")}, 3, torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert times == {"a": [5.0, 1.0, 9.0], "b": [2.0, 2.0, 2.0]}


def test_the_stage_timer_counts_each_module_and_detaches(tool) -> None:
    inner = torch.nn.Linear(4, 4)
    timer = tool.StageTimer({"inner": inner}, torch.device("cpu"))
    inner(torch.zeros(1, 4))
    inner(torch.zeros(1, 4))
    assert timer.seconds["inner"] > 0
    timer.remove()
    timer.reset()
    inner(torch.zeros(1, 4))
    assert timer.seconds["inner"] == 0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_sees_a_temporary_allocation() -> None:
    def allocate() -> None:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block

    assert peak_memory_mb(torch.device("cpu"), allocate) >= 60
    assert peak_memory_mb(torch.device("cpu"), lambda: None) < 30


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.cuda),
    ],
)
def test_a_whole_run_prints_the_table_and_writes_json(tool, tmp_path, capsys, device) -> None:
    output = tmp_path / "bench.json"
    argv = [
        "--config-file", str(SHAPES_CONFIG), "--device", device, "--image-size", "64", "96",
        "--num-proposals", "40", "--svd-ranks", "16", "8", "--repeat", "1",
        "--json", str(output), *SMALL,
    ]  # fmt: skip
    assert tool.main(argv) == 0
    table = capsys.readouterr().out
    assert "| torchvision-built |" in table and "| detkit + SVD (fc6 16, fc7 8) |" in table
    report = json.loads(output.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["torchvision-built", "detkit", "detkit + SVD (fc6 16, fc7 8)"]
    peer, detkit, svd = report["results"]
    assert all(r["inference_s"] > 0 for r in report["results"])
    assert peer["training_s"] > 0 and detkit["training_s"] > 0 and svd["training_s"] is None
    split = detkit["split_s"]
    assert set(split) == {"backbone", "pooling", "box_head", "rest", "total"}
    assert 0 < split["backbone"] + split["pooling"] + split["box_head"] <= split["total"]
    assert report["setting"]["image_size"] == [64, 96] and report["setting"]["classes"] == 4
    assert report["setting"]["device"] == device


def test_bad_arguments_end_with_status_2(tool, capsys) -> None:
    for option in ("--num-proposals", "--repeat"):
        with pytest.raises(SystemExit) as stop:
            tool.main(["--config-file", str(SHAPES_CONFIG), option, "0"])
        assert stop.value.code == 2 and option in capsys.readouterr().err
    assert tool.main(["--config-file", str(SHAPES_CONFIG), "MODEL.NO_SUCH_KEY=1"]) == 2
    assert "NO_SUCH_KEY" in capsys.readouterr().err


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    """tools/benchmark.py in its own process, on the CPU with one thread."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark.py"), *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


TINY_RUN = [
    "--config-file", str(SHAPES_CONFIG), "--device", "cpu", "--image-size", "64", "96",
    "--num-proposals", "40", "--repeat", "1", "--tasks", "inference",
]  # fmt: skip


def test_the_configs_own_model_has_detections_to_compare(tmp_path) -> None:
    report = tmp_path / "bench.json"
    result = run_benchmark(*TINY_RUN, "--json", str(report))  # the config's model as it is
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["setting"]["detections_checked"] > 0
    log = result.stderr
    for phase in ("building SmallConvNet models", "calibrating", "checking that both models"):
        assert f"benchmark: {phase}" in log
    for bar in ("inference", "inference peak memory", "inference time split"):
        assert f"benchmark: {bar}: 100%" in log  # a bar with the runs done and the time left


def test_a_setting_without_detections_is_refused(tmp_path) -> None:
    report = tmp_path / "bench.json"
    result = run_benchmark(
        *TINY_RUN, "--json", str(report), "MODEL.ROI_HEADS.SCORE_THRESH_TEST=1.0"
    )
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("benchmark: neither model detects anything")
    assert "SCORE_THRESH_TEST=1.0" in line and not report.exists()
