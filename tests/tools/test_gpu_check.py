"""tools/gpu_check.py: its steps are commands the tools accept, its report says what failed, and
without a CUDA device it refuses to run (the check itself runs only on a GPU machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return load_tool("gpu_check")


def test_every_benchmark_step_is_accepted_by_its_tools_parser(gpu_check, tmp_path) -> None:
    scripts = [s for s in gpu_check.steps(tmp_path) if s.args[0].startswith("tools/")]
    assert {s.name for s in scripts} == {"ops", "ops-deterministic", "e2e-r50-fpn", "e2e-vgg16"}
    for step in scripts:
        tool = load_tool(Path(step.args[0]).stem)
        args = tool.argument_parser().parse_args(list(step.args[1:]))
        assert args.device == "cuda"
        assert str(args.json).startswith(str(tmp_path)) and args.json.name == step.json_name
        if hasattr(args, "config_file"):
            assert (REPO / args.config_file).is_file()


def test_the_test_step_selects_the_cuda_marked_tests(gpu_check, tmp_path) -> None:
    (step,) = [s for s in gpu_check.steps(tmp_path) if s.name == "cuda-tests"]
    selected = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", *step.args[3:], "--rootdir", str(REPO)]
    )
    assert selected == pytest.ExitCode.OK
    assert "-m" in step.args and step.args[step.args.index("-m", 2) + 1] == "cuda"


def test_a_failed_or_timed_out_step_is_named_in_the_report(gpu_check, tmp_path) -> None:
    passing = gpu_check.Step("fine", "prints", ("-c", "print('all good')"))
    failing = gpu_check.Step("broken", "exits 3", ("-c", "import sys; print('bad'); sys.exit(3)"))
    slow = gpu_check.Step("slow", "sleeps", ("-c", "import time; time.sleep(30)"))
    outcomes = [
        gpu_check.run_step(step, sys.executable, tmp_path, timeout)
        for step, timeout in [(passing, 60), (failing, 60), (slow, 1)]
    ]
    assert [o.status for o in outcomes] == ["passed", "failed (exit 3)", "timed out after 1 s"]
    assert (tmp_path / "broken.log").read_text() == "bad\n"
    report = gpu_check.render(outcomes, "today")
    assert "FAILED: broken, slow" in report
    assert "| broken | exits 3 | failed (exit 3) |" in report and "all good" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the whole check on a GPU")
def test_without_a_cuda_device_it_refuses_with_status_2(gpu_check, tmp_path, capsys) -> None:
    assert gpu_check.main(["--output-dir", str(tmp_path / "report")]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
