"""Computes object proposals for a registered dataset and writes a proposal file.

    python tools/compute_proposals.py --dataset shapes_train --out proposals/shapes_train.pkl
        [--method selective_search] [--mode fast|quality] [--workers N] [--max-proposals 2000]

The file uses detectron2's pickle layout, which detkit (and detectron2) read back by image id.
An interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys

from detkit.data import DatasetCatalog
from detkit.data.selective_search import MODES, compute_proposal_file


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument("--out", required=True, help="the proposal file to write (.pkl)")
    parser.add_argument("--method", default="selective_search", choices=["selective_search"])
    parser.add_argument("--mode", default="fast", choices=MODES, help="selective search mode")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-proposals", type=int, default=2000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        dicts = DatasetCatalog.get(args.dataset)
    except (KeyError, FileNotFoundError) as error:
        print(f"compute_proposals: {error}", file=sys.stderr)
        return 2
    path = compute_proposal_file(dicts, args.out, args.mode, args.workers, args.max_proposals)
    print(f"wrote proposals of {len(dicts)} images to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
