"""Helpers of the checkpoint, signal and numerics cases: ``train_net`` run in this process on
the tiny model (the root conftest's ``tiny_shapes``), killed where a test says, and what a run
wrote."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from reliability_helpers import SHAPES_CONFIG

from detkit.config import load_config
from detkit.engine import DefaultTrainer, HookBase, run_train_net
from detkit.engine.run_state import RunState
from detkit.utils.logger import restored_logging

# the tiny model and inputs of every in-process run; dropout on, so resuming must replay it
TINY_MODEL = [
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.ROI_BOX_HEAD.DROPOUT=0.5",
    "INPUT.MIN_SIZE_TRAIN=[96, 112]",
    "INPUT.MAX_SIZE_TRAIN=160",
    "INPUT.MIN_SIZE_TEST=96",
    "INPUT.MAX_SIZE_TEST=160",
    "DATALOADER.NUM_WORKERS=0",
    "DATASETS.PROPOSAL_LOADER=auto",
    "SOLVER.BASE_LR=0.01",
    "SOLVER.WARMUP_ITERS=0",
    "SOLVER.STEPS=[]",
    "SOLVER.LOG_PERIOD=1",
    "TEST.EVALUATORS=[coco]",
    "SEED=7",
]


def tiny_overrides(shapes, output: Path, max_iter: int = 6, *extra: str) -> list[str]:
    """Overrides of the shapes config: the tiny model trained on ``shapes`` (the root
    conftest's ``tiny_shapes``) for ``max_iter`` iterations with a checkpoint every 2, not
    evaluated unless ``extra`` names test sets."""
    return [
        *TINY_MODEL,
        f"DATASETS.TRAIN=[{shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{shapes.proposal_file}]",
        "DATASETS.TEST=[]",
        "DATASETS.PROPOSAL_FILES_TEST=[]",
        f"SOLVER.MAX_ITER={max_iter}",
        "SOLVER.CHECKPOINT_PERIOD=2",
        f"OUTPUT_DIR={output}",
        *extra,
    ]


def tiny_config(shapes, output: Path, max_iter: int = 6, *extra: str) -> DictConfig:
    return load_config(SHAPES_CONFIG, tiny_overrides(shapes, output, max_iter, *extra))


def one_error_line(stderr: str) -> str:
    """The one line ``train_net`` printed on ``stderr`` for a user error (no traceback)."""
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_net:")]
    return line


def train_net_here(*argv: str, trainer_class: type[DefaultTrainer] = DefaultTrainer) -> int:
    """``run_train_net(argv)`` in this process, its logging set-up undone afterwards."""
    with restored_logging():
        return run_train_net(
            ["--config-file", str(SHAPES_CONFIG), *argv], trainer_class=trainer_class
        )


class SimulatedKillError(Exception):
    pass


class KilledAfterThree(DefaultTrainer):
    """Dies after iteration 3, once its checkpoint (period 2) is written, as a killed run."""

    def __init__(self, cfg: DictConfig, run_state: RunState | None = None) -> None:
        super().__init__(cfg, run_state)
        self.register_hooks([_RaiseAfter(3)])


class _RaiseAfter(HookBase):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise SimulatedKillError(f"killed after iteration {self.iteration}")


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    return torch.load(output / "model_final.pth", weights_only=True)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[name], b[name]) for name in a)


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time: what changed."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
