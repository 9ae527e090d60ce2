"""The RPN project's training: tools/train_net.py with ``ProposalNetwork``, ``ResNetFPNP6``, the
``proposal_recall`` evaluator and the ``MODEL.RPN`` / ``MODEL.ANCHOR_GENERATOR`` keys.

    python projects/RPN/train_net.py --config-file projects/RPN/configs/shapes_rpn.yaml

Same options and outputs as tools/train_net.py (run it from the repository root).
"""

from __future__ import annotations

import sys

import rpn  # registers the project's parts; runs again in every process launch starts

from detkit.config import get_default_config
from detkit.engine import run_train_net

if __name__ == "__main__":
    sys.exit(
        run_train_net(
            defaults=rpn.add_rpn_config(get_default_config()),
            description="detkit training of a region proposal network (RPN)",
        )
    )
