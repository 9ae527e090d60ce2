"""Computes object proposals for a registered dataset and writes a proposal file.

    python tools/compute_proposals.py --dataset shapes_train --out proposals/shapes_train.pkl
        [--method selective_search] [--mode fast|quality] [--workers N] [--max-proposals 2000]
        [--config-file CONFIG.yaml [KEY VALUE ...]]

``--config-file`` registers the datasets the config declares (``DATASETS.REGISTER``) first, so
``--dataset`` may name one of them.

The file uses detectron2's pickle layout, which detkit (and detectron2) read back by image id.
An interrupted run resumes where it stopped: the images done are kept in ``<out>.parts/`` with a
manifest of the dataset's images and the settings; parts another dataset or other settings left
there are discarded (with a log line), never used.
"""

from __future__ import annotations

import argparse
import os
import sys

from detkit.data import DatasetCatalog
from detkit.data.mapper import MAX_IMAGE_PIXELS
from detkit.data.selective_search import MODES, compute_proposal_file
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.logger import setup_logger


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(
        __doc__, "a config whose DATASETS.REGISTER to register", required=False
    )
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument(
        "--out", type=output_file, required=True, help="the proposal file to write (.pkl)"
    )
    parser.add_argument("--method", default="selective_search", choices=["selective_search"])
    parser.add_argument("--mode", default="fast", choices=MODES, help="selective search mode")
    parser.add_argument(
        "--workers", type=positive_int, default=os.cpu_count() or 1, help="default: all cores"
    )
    parser.add_argument(
        "--max-proposals", type=positive_int, default=2000, help="at most this many per image"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("compute_proposals", argument_parser(), compute, argv)


def compute(args: argparse.Namespace) -> int:
    """Writes the proposal file of ``args.dataset``; a user error (an unreadable image) stops
    it, the images done kept for the next run."""
    setup_logger()
    max_image_pixels = MAX_IMAGE_PIXELS
    if args.config_file:
        max_image_pixels = setup_config(args).INPUT.MAX_IMAGE_PIXELS
    dicts = DatasetCatalog.get(args.dataset)
    path = compute_proposal_file(
        dicts,
        args.out,
        args.mode,
        args.workers,
        args.max_proposals,
        max_image_pixels,
        dataset_name=args.dataset,
    )
    print(f"wrote proposals of {len(dicts)} images to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
