"""Trains several configs one after the other and tabulates their accuracy and speed: the one
command behind every side-by-side table in the docs and the projects' READMEs.

    python tools/compare_runs.py --output-dir output/compare/ohem \\
        --run "Fast R-CNN=tools/train_net.py:configs/shapes/fast_rcnn.yaml" \\
        --run "OHEM=projects/OHEM/train_net.py:projects/OHEM/configs/shapes_ohem.yaml" \\
        [KEY=VALUE ...]

A run is ``NAME=SCRIPT:CONFIG [KEY=VALUE ...]``: the training script (``tools/train_net.py`` or
a project's ``train_net.py``), its config and overrides of that run only; the overrides after
the options apply to every run. Each run is ``SCRIPT --config-file CONFIG OUTPUT_DIR=<output
dir>/<name> [run's overrides] [common overrides]``, one after the other so they do not share
the CPU. A run whose folder already holds its final evaluation is not repeated (delete the
folder to train it again). The table, printed last as Markdown, gives the COCO AP, AP50 and
AP75 on the first test set and the training speed: the median of ``metrics.json``'s ``time``
(seconds per iteration) after the first tenth of the run (a line that a killed run left cut
short is skipped with a warning).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from detkit.utils.arguments import output_folder
from detkit.utils.events import read_metrics
from detkit.utils.tool_help import tool_description


@dataclass(frozen=True)
class Run:
    name: str
    script: str
    config: str
    overrides: tuple[str, ...]

    @property
    def folder_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_") or "run"


def parse_run(text: str) -> Run:
    """A ``NAME=SCRIPT:CONFIG [KEY=VALUE ...]`` run description."""
    name, sep, rest = text.partition("=")
    words = shlex.split(rest)
    script, colon, config = words[0].partition(":") if words else ("", "", "")
    if not sep or not name.strip() or not colon or not script or not config:
        raise argparse.ArgumentTypeError(
            f"--run {text!r}: write NAME=SCRIPT:CONFIG [KEY=VALUE ...], e.g. "
            "'OHEM=projects/OHEM/train_net.py:projects/OHEM/configs/shapes_ohem.yaml'"
        )
    return Run(name.strip(), script, config, tuple(words[1:]))


def run_result(output_dir: Path) -> dict[str, float] | None:
    """AP, AP50, AP75 and s/iter of a finished run in ``output_dir``, or None if unfinished."""
    evaluations = sorted(output_dir.glob("inference/*/evaluation.json"))
    metrics_file = output_dir / "metrics.json"
    if not evaluations or not metrics_file.is_file():
        return None
    bbox = json.loads(evaluations[0].read_text())["bbox"]
    records = read_metrics(metrics_file)
    times = [(r["iteration"], r["time"]) for r in records if r.get("time") is not None]
    if not times:
        return None
    last = max(iteration for iteration, _ in times)
    steady = [t for iteration, t in times if iteration >= last / 10] or [t for _, t in times]
    return {
        "AP": bbox["AP"],
        "AP50": bbox["AP50"],
        "AP75": bbox["AP75"],
        "s/iter": statistics.median(steady),
    }


def markdown_table(results: dict[str, dict[str, float]], first_column: str = "run") -> str:
    lines = [f"| {first_column} | AP | AP50 | AP75 | s/iter |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['AP']:.2f} | {r['AP50']:.2f} | {r['AP75']:.2f} | {r['s/iter']:.4f} |"
        )
    return "\n".join(lines)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument(
        "--run",
        type=parse_run,
        action="append",
        required=True,
        metavar="NAME=SCRIPT:CONFIG",
        help="a run: NAME=SCRIPT:CONFIG [KEY=VALUE ...] (repeat for each row)",
    )
    parser.add_argument("--output-dir", type=output_folder, default="output/compare")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides for every run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    names = [run.name for run in args.run]
    folders = [run.folder_name for run in args.run]
    if len(set(names)) < len(names) or len(set(folders)) < len(folders):
        print(f"compare_runs: run names must differ (and their folders): {names}", file=sys.stderr)
        return 2
    results = {}
    for run in args.run:
        output_dir = args.output_dir / run.folder_name
        result = run_result(output_dir)
        if result is None:
            command = [
                sys.executable,
                run.script,
                "--config-file",
                run.config,
                f"OUTPUT_DIR={output_dir}",
                *run.overrides,
                *args.overrides,
            ]
            print("compare_runs: running " + shlex.join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                print(f"compare_runs: the {run.name} run failed; see {output_dir}", file=sys.stderr)
                return 1
            result = run_result(output_dir)
            if result is None:
                print(f"compare_runs: {output_dir} holds no final evaluation", file=sys.stderr)
                return 1
        results[run.name] = result
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
