"""Where a training run starts, its seed and first iteration, settled once per process before
anything is built from them (the config the run uses, the hooks, the data loader); with
``--resume``, the checkpoint it continues, read once for both the state and the load."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from omegaconf import DictConfig

from ..checkpoint import ResumePoint, read_resume_point
from ..config import ConfigError
from ..utils import comm

logger = logging.getLogger("detkit.engine")


@dataclass(frozen=True)
class RunState:
    """The seed every step's randomness derives from, the first iteration, and the checkpoint
    the run continues from (None: it starts afresh). ``resume_point`` is that checkpoint as it
    was read to settle the state, which the checkpointer loads without reading the file again
    (:meth:`detkit.checkpoint.DetectionCheckpointer.load_resume_point`)."""

    seed: int
    start_iter: int = 0
    checkpoint: str | None = None
    resume_point: ResumePoint | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        start = f"from {self.checkpoint} " if self.checkpoint else ""
        return f"iteration {self.start_iter} {start}with seed {self.seed}"


def resolve_run_state(cfg: DictConfig, resume: bool) -> RunState:
    """The run state of ``cfg``: with ``resume`` and a checkpoint in ``OUTPUT_DIR``, the
    iteration after that of the newest intact one (:func:`resumed_run_state`), with its seed;
    otherwise iteration 0 with ``SEED``, or a random seed shared by all processes when ``SEED``
    is negative.

    A resumed run keeps its seed, so that it continues exactly as if it had never stopped: a
    negative ``SEED`` takes the checkpoint's, and a ``SEED`` that differs from it is a
    :class:`ConfigError` naming both. Every process must call this: a negative ``SEED`` is
    drawn collectively. ``train_net`` calls it once per process, before set-up, and passes the
    state to :func:`~detkit.engine.default_setup` and the trainer.
    """
    # drawn in every process whatever it finds, so that the collective draw cannot hang
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    state = resumed_run_state(cfg.OUTPUT_DIR, seed) if resume else None
    if state is None:
        return RunState(seed)
    _check_seed(cfg.SEED, state)
    return state


def resumed_run_state(output_dir: str, seed: int) -> RunState | None:
    """The state of a run continuing the newest intact checkpoint of ``output_dir``, read in
    full once (:func:`~detkit.checkpoint.read_resume_point`; the state holds what was read for
    the checkpointer): the iteration after the checkpoint's and its seed, or ``seed`` when it
    records none (with a warning). None when ``output_dir`` holds no checkpoint."""
    point = read_resume_point(output_dir)
    if point is None:
        return None
    if "seed" not in point.training_state:
        logger.warning(f"{point.path} records no seed: the resumed run may not continue exactly")
    return _continuing(point, seed)


def check_resumable(cfg: DictConfig) -> None:
    """Raises what :func:`resolve_run_state` of ``cfg`` with ``resume`` would (no intact
    checkpoint, a ``SEED`` other than the checkpoint's) from a cheap look: only the index of
    the checkpoint to resume is read (``read_resume_point(full=False)``), not its tensors.

    For a command that starts processes, so that an unusable checkpoint stops it before they
    start, without reading the file in full once more. The records' checksums are left to the
    processes, which read the file in full: one that fails there makes them resume an older
    checkpoint, as it would have here.
    """
    point = read_resume_point(cfg.OUTPUT_DIR, full=False)
    if point is not None and cfg.SEED >= 0:
        _check_seed(cfg.SEED, _continuing(point, cfg.SEED))


def _continuing(point: ResumePoint, seed: int) -> RunState:
    """The state of a run continuing ``point``: its next iteration, its seed (else ``seed``)."""
    recorded = point.training_state
    start = int(recorded.get("iteration", -1)) + 1
    return RunState(int(recorded.get("seed", seed)), start, point.path, point)


def _check_seed(requested: int, state: RunState) -> None:
    """Refuses a ``SEED`` >= 0 (``requested``) other than that of the checkpoint ``state``
    continues."""
    if requested >= 0 and state.seed != requested:
        raise ConfigError(
            f"SEED={requested} but {state.checkpoint}, which resuming continues, was trained "
            f"with seed {state.seed}; a resumed run keeps its seed to continue exactly: set "
            f"SEED={state.seed} or SEED=-1 (the checkpoint's), or start a new run from its "
            f"weights (MODEL.WEIGHTS={state.checkpoint}, without --resume)"
        )
