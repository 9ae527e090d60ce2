"""The benchmark tools' own logic: benchmark_ops' level assignment and its refusal to time ops
that disagree, and compare_poolers' reading of finished runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_ops() -> ModuleType:
    return load_tool("benchmark_ops")


@pytest.fixture(scope="module")
def compare_poolers() -> ModuleType:
    return load_tool("compare_poolers")


def test_fpn_levels_follow_the_canonical_224_rule(benchmark_ops) -> None:
    # floor(4 + log2(side / 224)): below 112 px P2 (index 0), 112 to 224 P3, 224 to 448 P4, from
    # 448 P5 (1000 px would be P6, clamped to P5).
    sides = [50.0, 111.9, 112.0, 223.9, 224.0, 448.0, 1000.0]
    rois = torch.tensor([[0.0, 0.0, 0.0, side, side] for side in sides])
    levels = benchmark_ops.fpn_levels(rois, (4, 8, 16, 32))
    assert levels.tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert benchmark_ops.fpn_levels(rois, (16,)).tolist() == [0] * len(sides)


def small_shape(benchmark_ops, op: str):
    return benchmark_ops.Shape("tiny", "test", op, 2, 3, 64, 96, (8, 16), 30, sampling_ratio=2)


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_agreement_check_accepts_detkit_against_torchvision(benchmark_ops, op: str) -> None:
    shape = small_shape(benchmark_ops, op)
    benchmark_ops.check_agreement(shape, benchmark_ops.make_inputs(shape, torch.device("cpu")))


def test_agreement_check_refuses_to_time_a_wrong_op(benchmark_ops, monkeypatch) -> None:
    shape = small_shape(benchmark_ops, "roi_align")
    right = benchmark_ops.implementations(shape)
    wrong = benchmark_ops.Implementation(
        lambda x, r, s: right["detkit"].pool(x, r, s) * 1.001, right["detkit"].forward, None
    )
    monkeypatch.setattr(benchmark_ops, "implementations", lambda _: {**right, "detkit": wrong})
    with pytest.raises(SystemExit, match="outputs differ"):
        benchmark_ops.check_agreement(shape, benchmark_ops.make_inputs(shape, torch.device("cpu")))


def write_run(folder: Path, times: list[tuple[int, float]], ap: float = 70.0) -> None:
    (folder / "inference" / "shapes_val").mkdir(parents=True)
    bbox = {"AP": ap, "AP50": 95.0, "AP75": 80.0}
    (folder / "inference" / "shapes_val" / "evaluation.json").write_text(json.dumps({"bbox": bbox}))
    lines = [json.dumps({"iteration": i, "time": t, "total_loss": 1.0}) for i, t in times]
    lines.append(json.dumps({"iteration": times[-1][0] + 1, "shapes_val/bbox/AP": ap}))
    (folder / "metrics.json").write_text("\n".join(lines) + "\n")


def test_run_result_takes_the_median_time_after_the_first_tenth(compare_poolers, tmp_path) -> None:
    # Iterations 0..990: the first tenth (< 99) is warm-up and left out.
    times = [(0, 9.0), (19, 5.0), (99, 0.30), (499, 0.10), (799, 0.20), (990, 0.40)]
    write_run(tmp_path, times, ap=71.25)
    result = compare_poolers.run_result(tmp_path)
    assert result == {"AP": 71.25, "AP50": 95.0, "AP75": 80.0, "s/iter": 0.25}
    table = compare_poolers.markdown_table({"ROIPool": result})
    assert table.splitlines()[-1] == "| ROIPool | 71.25 | 95.00 | 80.00 | 0.2500 |"


def test_run_result_is_none_for_an_unfinished_run(compare_poolers, tmp_path) -> None:
    assert compare_poolers.run_result(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "time": 1.0}) + "\n")
    assert compare_poolers.run_result(tmp_path) is None  # no evaluation yet
