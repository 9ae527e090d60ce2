"""tools/benchmark.py: the alternation, the stage timer and the memory probe; a whole run writes
its table and JSON, the config's own model, run as the tool runs it, has detections to compare
and logs its phases, and a setting with no detection to compare is refused. The peer and the
equal-work check are tested in test_torchvision_peer.py. Small models only: speed itself is
measured by running the tool, not here."""

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

from detkit.utils.timing import peak_memory_mb

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
SMALL = [
    "MODEL.DEVICE=cpu",
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    """The script, imported as Python runs it: its folder first on ``sys.path`` (where its
    package torchvision_peer lies), itself in ``sys.modules`` (where dataclasses look)."""
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "tools"))
    return module


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Tiny models: one thread (see the root conftest)."""


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
