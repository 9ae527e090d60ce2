"""Trains and evaluates a detector from a config: the standard detkit entry point.

    python tools/train_net.py --config-file configs/shapes/fast_rcnn.yaml
    python tools/train_net.py --config-file FILE --resume             # continue last_checkpoint
    python tools/train_net.py --config-file FILE --eval-only MODEL.WEIGHTS=output/model_final.pth
    python tools/train_net.py --config-file FILE --num-gpus 2         # 2 processes (GPUs or CPU)

Config overrides follow the options as KEY=VALUE (or detectron2's KEY VALUE). Outputs go to
OUTPUT_DIR: config.yaml, log.txt, metrics.json, TensorBoard events, checkpoints and inference/.
A project's train_net.py is this command with its own keys: ``run_train_net(defaults=...)``.
"""

from __future__ import annotations

import argparse
import sys

from detkit.engine import default_argument_parser, run_train_net
from detkit.utils.tool_help import tool_description


def argument_parser() -> argparse.ArgumentParser:
    """The options ``run_train_net`` parses: detkit's ``default_argument_parser``."""
    return default_argument_parser(tool_description(__doc__))


if __name__ == "__main__":
    sys.exit(run_train_net(description=tool_description(__doc__)))
