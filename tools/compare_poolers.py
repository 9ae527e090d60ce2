"""Trains one model per RoI pooler type with the same config, seed and schedule, and tabulates
their accuracy and speed.

    python tools/compare_poolers.py --config-file configs/shapes/fast_rcnn.yaml \\
        [--types ROIPool,ROIAlign,ROIAlignV2] [--output-dir output/poolers] [KEY=VALUE ...]

Each type is trained by ``tools/train_net.py --config-file FILE
MODEL.ROI_BOX_HEAD.POOLER_TYPE=<type> OUTPUT_DIR=<output-dir>/<type> [KEY=VALUE ...]``, one run
after the other so that they do not share the CPU. A run whose folder already holds its final
evaluation is not repeated (delete the folder to train it again). The table, printed last as
Markdown, gives the COCO AP, AP50 and AP75 of the first test set and the training speed: the
median of ``metrics.json``'s ``time`` (seconds per iteration) after the first tenth of the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

TRAIN_NET = Path(__file__).with_name("train_net.py")
DEFAULT_TYPES = "ROIPool,ROIAlign,ROIAlignV2"


def run_result(output_dir: Path) -> dict[str, float] | None:
    """AP, AP50, AP75 and s/iter of a finished run in ``output_dir``, or None if unfinished."""
    evaluations = sorted(output_dir.glob("inference/*/evaluation.json"))
    metrics_file = output_dir / "metrics.json"
    if not evaluations or not metrics_file.is_file():
        return None
    bbox = json.loads(evaluations[0].read_text())["bbox"]
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
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


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| pooler | AP | AP50 | AP75 | s/iter |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['AP']:.2f} | {r['AP50']:.2f} | {r['AP75']:.2f} | {r['s/iter']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--types", default=DEFAULT_TYPES, help="comma-separated pooler types")
    parser.add_argument("--output-dir", type=Path, default=Path("output/poolers"))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides for every run")
    args = parser.parse_args(argv)

    results = {}
    for name in args.types.split(","):
        output_dir = args.output_dir / name
        if run_result(output_dir) is None:
            command = [
                sys.executable,
                str(TRAIN_NET),
                "--config-file",
                args.config_file,
                f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={name}",
                f"OUTPUT_DIR={output_dir}",
                *args.overrides,
            ]
            print("compare_poolers: running " + " ".join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                print(f"compare_poolers: the {name} run failed; see {output_dir}", file=sys.stderr)
                return 1
        result = run_result(output_dir)
        if result is None:
            print(f"compare_poolers: {output_dir} holds no final evaluation", file=sys.stderr)
            return 1
        results[name] = result
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
