"""Learning-rate schedules as fvcore param schedulers, applied per iteration to an optimizer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)


def fit_schedule_to_run(
    max_iter: int, steps: Sequence[int], warmup_iters: int
) -> tuple[list[int], int, list[str]]:
    """``steps`` and ``warmup_iters`` fitted to a run of ``max_iter`` iterations, as detectron2
    lets a short run keep a long schedule's steps: steps at or past the end are dropped and a
    warm-up as long as the run or longer ends one iteration before its end. Also returns what
    was changed, in words (empty when nothing was)."""
    steps = [int(s) for s in steps]
    kept = [s for s in steps if s < max_iter]
    changes = []
    if len(kept) < len(steps):
        dropped = [s for s in steps if s >= max_iter]
        changes.append(f"SOLVER.STEPS {dropped} at or past SOLVER.MAX_ITER={max_iter} are ignored")
    if max_iter > 0 and warmup_iters >= max_iter:
        changes.append(
            f"SOLVER.WARMUP_ITERS={warmup_iters} is cut to {max_iter - 1}, within "
            f"SOLVER.MAX_ITER={max_iter}"
        )
        warmup_iters = max_iter - 1
    return kept, warmup_iters, changes


def warmup_multistep_schedule(
    max_iter: int,
    steps: Sequence[int],
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
) -> ParamScheduler:
    """The multiplier of the base lr over training: ``gamma ** k`` after the k-th of ``steps``,
    preceded by a linear ramp from ``warmup_factor`` over the first ``warmup_iters``.

    The ramp ends at the step schedule's value where warmup ends, so the two join without a jump.
    """
    if max_iter <= 0:
        raise ValueError(f"SOLVER.MAX_ITER must be positive, got {max_iter}")
    steps = [int(s) for s in steps]
    increasing = all(a < b for a, b in itertools.pairwise(steps))
    if not increasing or any(not 0 < s < max_iter for s in steps):
        raise ValueError(
            f"SOLVER.STEPS must increase and lie in (0, SOLVER.MAX_ITER={max_iter}), got {steps}"
        )
    if not 0 <= warmup_iters < max_iter:
        raise ValueError(
            f"SOLVER.WARMUP_ITERS must lie in [0, SOLVER.MAX_ITER={max_iter}), got {warmup_iters}"
        )
    main = MultiStepParamScheduler(
        [gamma**k for k in range(len(steps) + 1)], num_updates=max_iter, milestones=steps
    )
    if warmup_iters == 0:
        return main
    length = warmup_iters / max_iter
    ramp = LinearParamScheduler(warmup_factor * main(length), main(length))
    # "rescaled" maps the ramp onto [0, 1) of its own length; "fixed" lets the step schedule see
    # the true training progress, so its milestones stay at their iterations.
    return CompositeParamScheduler([ramp, main], [length, 1 - length], ["rescaled", "fixed"])


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets every parameter group's lr to its initial lr times ``multiplier(iter / max_iter)``.

    ``step()`` is called once per iteration. Its ``state_dict`` holds only the iteration count
    (the schedule itself is rebuilt from the config), so checkpoints stay plain tensors and
    numbers that load with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int
    ) -> None:
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
