"""Scores a proposal file on a registered dataset: COCO's average recall, AR@100 and AR@1000
overall and by object size, as a Markdown table (the same code as the ``proposal_recall``
evaluator, so an RPN's proposals and selective search's are measured alike).

    python projects/RPN/evaluate_proposals.py --dataset coco_2017_val --proposals FILE
        [--loader auto] [--by-iou] [--json OUT.json] [--config-file CONFIG.yaml [KEY VALUE ...]]

``--config-file`` registers the datasets the config declares (``DATASETS.REGISTER``) first, so
``--dataset`` may name one of them (an RPN config will do). The file is read as training reads
it, without top-k or ``min_size`` (see :func:`rpn.evaluator.proposal_file_recall`).
"""

from __future__ import annotations

import argparse
import sys

from rpn.config import add_rpn_config
from rpn.evaluator import TASK, proposal_file_recall

from detkit.config import get_default_config
from detkit.data import PROPOSAL_LOADER_REGISTRY
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.evaluation import format_results_table
from detkit.utils.arguments import output_file
from detkit.utils.file_io import strict_json, write_bytes_atomically
from detkit.utils.logger import setup_logger


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(
        __doc__, "a config whose DATASETS.REGISTER to register", required=False
    )
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument("--proposals", required=True, help="the proposal file to score")
    parser.add_argument(
        "--loader",
        default="auto",
        choices=["auto", *sorted(name for name, _ in PROPOSAL_LOADER_REGISTRY)],
        help="the proposal loader (auto: .mat as Fast R-CNN's, anything else as a pickle)",
    )
    parser.add_argument(
        "--by-iou",
        action="store_true",
        help="also the recall at each IoU threshold 0.50 ... 0.95 that AR averages",
    )
    parser.add_argument("--json", type=output_file, help="also write the results to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("evaluate_proposals", argument_parser(), evaluate, argv)


def evaluate(args: argparse.Namespace) -> int:
    """Prints the AR table of ``args.proposals`` on ``args.dataset`` (and writes it as JSON)."""
    setup_logger()
    if args.config_file:
        setup_config(args, defaults=add_rpn_config(get_default_config()))
    recall = proposal_file_recall(args.dataset, args.proposals, args.loader, by_iou=args.by_iou)
    results = {TASK: recall}
    print(format_results_table(results))
    if args.json:
        write_bytes_atomically(args.json, strict_json(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
