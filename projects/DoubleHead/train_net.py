"""Double-Head R-CNN's training: tools/train_net.py with the project's keys and box head.

    .venv/bin/python projects/DoubleHead/train_net.py \\
        --config-file projects/DoubleHead/configs/shapes_double_head.yaml [KEY=VALUE ...]

Every option of tools/train_net.py works here (--eval-only, --resume, --num-gpus, ...).
"""

from __future__ import annotations

import sys

import double_head  # registers DoubleHead; runs again in every process launch starts

from detkit.config import get_default_config
from detkit.engine import run_train_net

if __name__ == "__main__":
    sys.exit(
        run_train_net(
            defaults=double_head.add_double_head_config(get_default_config()),
            description="Double-Head R-CNN training",
        )
    )
