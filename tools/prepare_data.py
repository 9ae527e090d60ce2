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

from detkit.config import ConfigError, load_config
from detkit.data.cache import cache_root
from detkit.data.loaders import evaluation_dataset_dicts, train_dataset_dicts
from detkit.engine import parse_overrides
from detkit.utils.errors import UserError
from detkit.utils.logger import setup_logger
from detkit.utils.tool_help import tool_description

logger = logging.getLogger("detkit.tools")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=["train", "test"],
        default=["train", "test"],
        help="which of DATASETS.TRAIN and DATASETS.TEST to prepare (default: both)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY=VALUE)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    setup_logger()
    try:
        cfg = load_config(args.config_file, parse_overrides(args.opts))
        started = time.perf_counter()
        logger.info(f"converted forms live under {cache_root()} (DETKIT_CACHE_DIR moves them)")
        if "train" in args.sets and cfg.DATASETS.TRAIN:
            train_dataset_dicts(cfg)
        if "test" in args.sets:
            for name in cfg.DATASETS.TEST:
                evaluation_dataset_dicts(cfg, name)
    except (ConfigError, UserError) as error:
        print(f"prepare_data: {error}", file=sys.stderr)
        return 2
    logger.info(f"prepared in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
