"""Checks detkit on a CUDA GPU in one command and writes one report (``make gpu-check``).

    python tools/gpu_check.py [--output-dir DIR] [--step-timeout SECONDS]

Run on a machine with a CUDA device after the build (``make gpu-check`` builds first). Each step
runs as its own process, with a time limit, its whole output kept in ``DIR/<step>.log``:

1. ``environment``: Python, torch, CUDA, the GPU, and where detkit's ops have kernels;
2. ``build``: ``tests/test_build.py`` with the CUDA kernels required in ``detkit._C``;
3. ``cuda-tests``: every test marked ``cuda`` (``pytest -m cuda``: the ops' CUDA kernels against
   the CPU kernels and torchvision, their gradients, the deterministic backward, autocast,
   ``opcheck``, ``torch.compile``, and the end-to-end benchmark on the GPU);
4. ``ops``, ``ops-deterministic``: ``tools/benchmark_ops.py --device cuda``, without and with
   ``--deterministic`` (the fixed-point backward);
5. ``e2e-r50-fpn``, ``e2e-vgg16``: ``tools/benchmark.py --device cuda`` at the R50-FPN setting
   (800x1333, 1000 proposals) and the paper's VGG16 setting (600x1000, 2000 proposals, with
   truncated SVD 1024/256).

``DIR/report.md`` holds every step's outcome and time, and the benchmarks' tables; the JSON the
benchmarks write lies beside it. The exit status is 0 when every step passed, 1 when one
failed or ran out of time, 2 when there is no CUDA device. On an H100 the whole check takes
about 5 minutes (most of it the tests).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detkit.utils.tool_help import tool_description

REPO = Path(__file__).resolve().parents[1]
R50_FPN = "configs/COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml"
VGG16 = "configs/PascalVOC/fast_rcnn_VGG16.yaml"


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    args: tuple[str, ...]  # after the Python interpreter
    env: dict[str, str] = field(default_factory=dict)
    json_name: str | None = None  # the JSON file the step writes into the output folder


@dataclass
class Outcome:
    step: Step
    status: str  # "passed", "failed (exit N)" or "timed out after N s"
    seconds: float
    tail: str  # the end of the step's output, for the report


def steps(output_dir: Path) -> list[Step]:
    """The check's steps, in order; benchmark JSON goes into ``output_dir``."""

    def json_path(name: str) -> str:
        return str(output_dir / name)

    return [
        Step(
            "environment",
            "Python, torch, CUDA, the GPU, detkit's kernels",
            ("-c", "from detkit.utils.env import collect_env_info; print(collect_env_info())"),
        ),
        Step(
            "build",
            "detkit._C holds the CUDA kernels of every op",
            ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_build.py"),
            env={"DETKIT_EXPECT_CUDA_KERNELS": "1"},
        ),
        Step(
            "cuda-tests",
            "every test marked cuda (pytest -m cuda)",
            ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests", "projects"),
        ),
        Step(
            "ops",
            "tools/benchmark_ops.py --device cuda",
            ("tools/benchmark_ops.py", "--device", "cuda", "--json", json_path("ops.json")),
            json_name="ops.json",
        ),
        Step(
            "ops-deterministic",
            "tools/benchmark_ops.py --device cuda --deterministic",
            (
                "tools/benchmark_ops.py", "--device", "cuda", "--deterministic",
                "--json", json_path("ops_deterministic.json"),
            ),
            json_name="ops_deterministic.json",
        ),
        Step(
            "e2e-r50-fpn",
            f"tools/benchmark.py --device cuda, {R50_FPN}, 1000 proposals",
            (
                "tools/benchmark.py", "--config-file", R50_FPN, "--device", "cuda",
                "--num-proposals", "1000", "--json", json_path("e2e_r50_fpn.json"),
            ),
            json_name="e2e_r50_fpn.json",
        ),
        Step(
            "e2e-vgg16",
            f"tools/benchmark.py --device cuda, {VGG16}, 2000 proposals, SVD 1024/256",
            (
                "tools/benchmark.py", "--config-file", VGG16, "--device", "cuda",
                "--svd-ranks", "1024", "256", "--json", json_path("e2e_vgg16.json"),
            ),
            json_name="e2e_vgg16.json",
        ),
    ]


def run_step(step: Step, python: str, output_dir: Path, timeout: float) -> Outcome:
    """Runs ``step`` to completion or ``timeout``; its output goes to ``output_dir/NAME.log``."""
    log = output_dir / f"{step.name}.log"
    start = time.perf_counter()
    with open(log, "w") as file:
        try:
            process = subprocess.run(
                [python, *step.args],
                cwd=REPO,
                env={**os.environ, **step.env},
                stdout=file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            status = "passed" if process.returncode == 0 else f"failed (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    return Outcome(step, status, seconds, tail(log.read_text(errors="replace")))


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of a step's output."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def render(outcomes: Sequence[Outcome], started: str) -> str:
    """The report: a table of the steps, then each step's output tail."""
    failed = [o.step.name for o in outcomes if o.status != "passed"]
    verdict = "every step passed" if not failed else f"FAILED: {', '.join(failed)}"
    lines = [
        "# detkit GPU check",
        "",
        f"Started {started}; `python tools/gpu_check.py` (`make gpu-check`): {verdict}.",
        "",
        "| step | what | outcome | seconds | output |",
        "|---|---|---|---:|---|",
    ]
    for o in outcomes:
        output = f"`{o.step.name}.log`" + (f", `{o.step.json_name}`" if o.step.json_name else "")
        lines.append(
            f"| {o.step.name} | {o.step.what} | {o.status} | {o.seconds:.1f} | {output} |"
        )
    for o in outcomes:
        lines += ["", f"## {o.step.name}: {o.status}", "", "```", o.tail, "```"]
    return "\n".join(lines) + "\n"


def cuda_problem(python: str) -> str | None:
    """Why ``python`` sees no CUDA device, or None when it sees one."""
    probe = subprocess.run(
        [python, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"{python} cannot import torch: {tail(probe.stderr, 1)}"
    if probe.stdout.strip() != "True":
        return "torch.cuda.is_available() is False here: run the check on a machine with a GPU"
    return None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO / "output" / "gpu_check",
        metavar="DIR",
        help="where report.md, each step's log and the benchmarks' JSON go",
    )
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="the longest one step may run before it counts as failed (default 300)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    python = sys.executable
    problem = cuda_problem(python)
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    outcomes = []
    for step in steps(args.output_dir):
        print(f"gpu_check: {step.name}: {step.what} ...", flush=True)
        outcome = run_step(step, python, args.output_dir, args.step_timeout)
        print(f"gpu_check: {step.name}: {outcome.status} in {outcome.seconds:.1f} s", flush=True)
        outcomes.append(outcome)
    report = args.output_dir / "report.md"
    report.write_text(render(outcomes, started))
    print(f"gpu_check: wrote {report}")
    return 0 if all(o.status == "passed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
