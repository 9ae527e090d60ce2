"""Prints the evaluation results a training run saved, as tables.

    python tools/show_results.py output/shapes_fast_rcnn

Reads ``<OUTPUT_DIR>/inference/<dataset>/evaluation.json`` (written by ``tools/train_net.py``)
for every evaluated dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detkit.evaluation import format_results_table
from detkit.utils.tool_help import tool_description


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument("output_dir", help="a run's OUTPUT_DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    files = sorted(Path(args.output_dir).glob("inference/*/evaluation.json"))
    if not files:
        print(
            f"show_results: no inference/*/evaluation.json under {args.output_dir}; "
            "has the run finished its evaluation?",
            file=sys.stderr,
        )
        return 1
    for file in files:
        try:
            results = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            print(f"show_results: {file} is not valid JSON: {error}", file=sys.stderr)
            return 1
        print(f"Results on {file.parent.name} ({file}):\n{format_results_table(results)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
