"""Where a training run starts, its seed and first iteration, settled once before anything is
built from them (the config record, the hooks, the data loader)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from ..checkpoint import read_training_state, resumable_checkpoint
from ..config import ConfigError
from ..utils import comm

logger = logging.getLogger("detkit.engine")


@dataclass(frozen=True)
class RunState:
    """The seed every step's randomness derives from, the first iteration, and the checkpoint
    the run continues from (None: it starts afresh)."""

    seed: int
    start_iter: int = 0
    checkpoint: str | None = None

    def __str__(self) -> str:
        start = f"from {self.checkpoint} " if self.checkpoint else ""
        return f"iteration {self.start_iter} {start}with seed {self.seed}"


def resolve_run_state(cfg: DictConfig, resume: bool) -> RunState:
    """The run state of ``cfg``: with ``resume`` and a checkpoint in ``OUTPUT_DIR``, the
    iteration after that of the newest intact one (:func:`resumable_checkpoint`), with its seed;
    otherwise iteration 0 with ``SEED``, or a random seed shared by all processes when ``SEED``
    is negative.

    A resumed run keeps its seed, so that it continues exactly as if it had never stopped: a
    negative ``SEED`` takes the checkpoint's, and a ``SEED`` that differs from it is a
    :class:`ConfigError` naming both. Every process must call this: a negative ``SEED`` is
    drawn collectively.
    """
    # drawn in every process whatever it finds, so that the collective draw cannot hang
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    path = resumable_checkpoint(cfg.OUTPUT_DIR, warn=False) if resume else None
    if path is None:
        return RunState(seed)
    recorded = read_training_state(path)
    start = int(recorded.get("iteration", -1)) + 1
    if "seed" not in recorded:
        logger.warning(f"{path} records no seed: the resumed run may not continue exactly")
        return RunState(seed, start, path)
    if cfg.SEED >= 0 and recorded["seed"] != cfg.SEED:
        raise ConfigError(
            f"SEED={cfg.SEED} but {path}, which resuming continues, was trained with seed "
            f"{recorded['seed']}; a resumed run keeps its seed to continue exactly: set "
            f"SEED={recorded['seed']} or SEED=-1 (the checkpoint's), or start a new run from "
            f"its weights (MODEL.WEIGHTS={path}, without --resume)"
        )
    return RunState(int(recorded["seed"]), start, path)


def record_run_state(cfg: DictConfig, state: RunState) -> None:
    """Records ``state``'s seed as ``cfg.SEED``, so the config says which seed the run uses;
    a state settled from another config (another ``SEED`` >= 0) is refused."""
    if cfg.SEED >= 0 and state.seed != cfg.SEED:
        raise ValueError(
            f"the run state's seed {state.seed} is not SEED={cfg.SEED}; settle it from this "
            "config: resolve_run_state(cfg, resume)"
        )
    cfg.SEED = state.seed
