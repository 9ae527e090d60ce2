"""Converts a config's datasets and proposal files into their cached forms before a run.

    python tools/prepare_data.py --config-file CONFIG.yaml [--sets train test] [KEY=VALUE ...]

Training and evaluation read every dataset of ``DATASETS.TRAIN`` and ``DATASETS.TEST`` (and its
proposal file) from a converted form that is made on first use and memory-mapped by every
process after (docs/datasets.md, "Converted forms"). At COCO's scale the first use takes
minutes; this command takes them beforehand, in one process, so that a run of many processes (or
a cluster job with a time limit) starts at once. It prints where each form lives and its size.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from detkit.data.cache import cache_root
from detkit.data.loaders import evaluation_dataset_dicts, train_dataset_dicts
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.utils.logger import setup_logger

logger = logging.getLogger("detkit.tools")


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the config whose datasets to prepare")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=["train", "test"],
        default=["train", "test"],
        help="which of DATASETS.TRAIN and DATASETS.TEST to prepare (default: both)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("prepare_data", argument_parser(), prepare, argv)


def prepare(args: argparse.Namespace) -> int:
    setup_logger()
    cfg = setup_config(args)
    started = time.perf_counter()
    logger.info(f"converted forms live under {cache_root()} (DETKIT_CACHE_DIR moves them)")
    if "train" in args.sets and cfg.DATASETS.TRAIN:
        train_dataset_dicts(cfg)
    if "test" in args.sets:
        for name in cfg.DATASETS.TEST:
            evaluation_dataset_dicts(cfg, name)
    logger.info(f"prepared in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
