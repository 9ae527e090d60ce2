"""Fixtures shared by the engine tests: configs for a model small enough to train a few iterations
on a CPU in well under a second (the tiny shapes set they train on is the root conftest.py's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from detkit.config import load_config

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"

# A model and inputs small enough for CPU tests; dropout stays on so that the random generator
# matters (a resumed run must replay the same dropout masks).
TINY_MODEL = [
    "MODEL.BACKBONE.NAME=SmallConvNet",
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.ROI_BOX_HEAD.DROPOUT=0.5",
    "INPUT.MIN_SIZE_TRAIN=[96, 112]",
    "INPUT.MAX_SIZE_TRAIN=160",
    "INPUT.MIN_SIZE_TEST=96",
    "INPUT.MAX_SIZE_TEST=160",
    "DATALOADER.NUM_WORKERS=0",
    "SOLVER.BASE_LR=0.01",
    "SOLVER.WARMUP_ITERS=2",
    "SOLVER.STEPS=[3]",
    "SOLVER.LOG_PERIOD=2",
    "DATASETS.TEST=[]",
    "DATASETS.PROPOSAL_FILES_TEST=[]",
    "DATASETS.PROPOSAL_LOADER=auto",
    "SEED=7",
]


@pytest.fixture(scope="session")
def tiny_model_overrides() -> list[str]:
    """The overrides that shrink the shapes config to the tiny model (for spawned processes)."""
    return list(TINY_MODEL)


@pytest.fixture
def make_config(tiny_shapes) -> Callable[..., DictConfig]:
    """``make_config(output_dir, *overrides)``: the shapes config shrunk to the tiny model,
    training on the tiny set; the output folder is created (``default_setup`` would do it)."""

    def make(output_dir: Path, *overrides: str) -> DictConfig:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return load_config(
            SHAPES_CONFIG,
            [
                *TINY_MODEL,
                f"DATASETS.TRAIN=[{tiny_shapes.name}]",
                f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]",
                f"OUTPUT_DIR={output_dir}",
                *overrides,
            ],
        )

    return make


@pytest.fixture(scope="module", autouse=True)
def single_threaded(one_thread) -> None:
    """Every test here runs with one intra-op thread (the root conftest's ``one_thread``)."""
