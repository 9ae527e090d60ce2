"""OHEM's training: tools/train_net.py with the OHEM sampler registered and the MODEL.OHEM keys.

    python projects/OHEM/train_net.py --config-file projects/OHEM/configs/shapes_ohem.yaml

Same options and outputs as tools/train_net.py (run it from the repository root).
"""

from __future__ import annotations

import sys

import ohem  # registers OHEMSampler; runs again in every process launch starts

from detkit.config import get_default_config
from detkit.engine import run_train_net

if __name__ == "__main__":
    sys.exit(
        run_train_net(
            defaults=ohem.add_ohem_config(get_default_config()),
            description="detkit training with online hard example mining (OHEM)",
        )
    )
