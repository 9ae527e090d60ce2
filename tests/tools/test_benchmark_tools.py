"""The benchmark tools' own logic: benchmark_ops' level assignment and its refusal to time ops
that disagree, and compare_runs' parsing of runs, its reading of finished runs and its table."""

from __future__ import annotations

import argparse
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
def compare_runs() -> ModuleType:
    return load_tool("compare_runs")


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


def test_run_result_takes_the_median_time_after_the_first_tenth(compare_runs, tmp_path) -> None:
    # Iterations 0..990: the first tenth (< 99) is warm-up and left out.
    times = [(0, 9.0), (19, 5.0), (99, 0.30), (499, 0.10), (799, 0.20), (990, 0.40)]
    write_run(tmp_path, times, ap=71.25)
    result = compare_runs.run_result(tmp_path)
    assert result == {"AP": 71.25, "AP50": 95.0, "AP75": 80.0, "s/iter": 0.25}
    table = compare_runs.markdown_table({"ROIPool": result}, first_column="pooler")
    assert table.splitlines()[0] == "| pooler | AP | AP50 | AP75 | s/iter |"
    assert table.splitlines()[-1] == "| ROIPool | 71.25 | 95.00 | 80.00 | 0.2500 |"


def test_run_result_is_none_for_an_unfinished_run(compare_runs, tmp_path) -> None:
    assert compare_runs.run_result(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "time": 1.0}) + "\n")
    assert compare_runs.run_result(tmp_path) is None  # no evaluation yet


def test_a_run_is_a_name_a_script_a_config_and_its_own_overrides(compare_runs) -> None:
    run = compare_runs.parse_run(
        "Fast R-CNN, RoIPool=tools/train_net.py:configs/a.yaml MODEL.X=1 'SOLVER.STEPS=[1, 2]'"
    )
    assert (run.name, run.script, run.config) == (
        "Fast R-CNN, RoIPool",
        "tools/train_net.py",
        "configs/a.yaml",
    )
    assert run.overrides == ("MODEL.X=1", "SOLVER.STEPS=[1, 2]")
    assert run.folder_name == "Fast_R-CNN_RoIPool"
    for bad in ["no-equals", "name=script-without-config", "=tools/train_net.py:a.yaml"]:
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=SCRIPT:CONFIG"):
            compare_runs.parse_run(bad)


FAKE_TRAIN_NET = r"""
import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[3:])
out = Path(args["OUTPUT_DIR"])
(out / "inference" / "val").mkdir(parents=True)
ap = float(args.get("AP", 50))
(out / "inference" / "val" / "evaluation.json").write_text(
    json.dumps({"bbox": {"AP": ap, "AP50": ap + 1, "AP75": ap - 1}})
)
(out / "metrics.json").write_text(json.dumps({"iteration": 9, "time": float(args["T"])}) + "\n")
(out / "argv.json").write_text(json.dumps(sys.argv[1:]))
"""


def test_runs_are_trained_in_order_with_their_overrides_then_tabulated(
    compare_runs, tmp_path, capsys
) -> None:
    script = tmp_path / "fake_train_net.py"
    script.write_text(FAKE_TRAIN_NET)
    argv = [
        "--output-dir",
        str(tmp_path / "out"),
        "--run",
        f"plain={script}:a.yaml AP=40",
        "--run",
        f"mined={script}:b.yaml AP=45 T=0.5",
        "T=0.25",
    ]
    assert compare_runs.main(argv) == 0
    table = capsys.readouterr().out.strip().splitlines()[-2:]
    assert table == [
        "| plain | 40.00 | 41.00 | 39.00 | 0.2500 |",
        "| mined | 45.00 | 46.00 | 44.00 | 0.2500 |",
    ]  # common overrides last
    recorded = json.loads((tmp_path / "out" / "mined" / "argv.json").read_text())
    assert recorded == [
        "--config-file",
        "b.yaml",
        f"OUTPUT_DIR={tmp_path / 'out' / 'mined'}",
        "AP=45",
        "T=0.5",
        "T=0.25",
    ]
    # a finished run is not repeated: deleting the script makes a rerun fail if it tried
    script.unlink()
    assert compare_runs.main(argv) == 0


def test_a_failing_run_stops_the_comparison(compare_runs, tmp_path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("import sys; sys.exit(3)")
    argv = ["--output-dir", str(tmp_path), "--run", f"x={script}:a.yaml"]
    assert compare_runs.main(argv) == 1
