"""Learning-rate schedules as fvcore param schedulers, applied per iteration to an optimizer, and
the schedule keys fitted to a shortened run."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

# detectron2 writes every 20 iterations: a period that short is never shortened further.
DETECTRON2_LOG_PERIOD = 20


class FittedSchedule(NamedTuple):
    """A run's schedule keys fitted to its ``SOLVER.MAX_ITER``, and what was changed, in words
    (empty when nothing was)."""

    steps: list[int]
    warmup_iters: int
    log_period: int
    changes: list[str]


def fit_schedule_to_run(
    max_iter: int, steps: Sequence[int], warmup_iters: int, log_period: int
) -> FittedSchedule:
    """``steps``, ``warmup_iters`` and ``log_period`` fitted to a run of ``max_iter``
    iterations, so that shortening a run needs only ``SOLVER.MAX_ITER``, as in detectron2:

    * steps at or past the end are dropped;
    * a warm-up over half the run is cut to a tenth of it, so most of the run trains at the
      full learning rate (a base's 100-iteration warm-up on a 60-iteration run: 6);
    * a log period over a tenth of the run is cut to a tenth of it, or to detectron2's 20
      iterations when that is longer, so a run writes its progress as it goes (a period of
      100 on a 60-iteration run: 20).
    """
    steps = [int(s) for s in steps]
    kept = [s for s in steps if s < max_iter]
    changes = []
    if len(kept) < len(steps):
        dropped = [s for s in steps if s >= max_iter]
        changes.append(f"SOLVER.STEPS {dropped} at or past SOLVER.MAX_ITER={max_iter} are ignored")
    if max_iter > 0 and warmup_iters > max_iter / 2:
        fitted = max_iter // 10
        changes.append(
            f"SOLVER.WARMUP_ITERS={warmup_iters} is cut to {fitted}, a tenth of "
            f"SOLVER.MAX_ITER={max_iter}"
        )
        warmup_iters = fitted
    longest_period = max(max_iter // 10, DETECTRON2_LOG_PERIOD)
    if log_period > longest_period:
        changes.append(
            f"SOLVER.LOG_PERIOD={log_period} is cut to {longest_period}, to write progress "
            f"during a run of SOLVER.MAX_ITER={max_iter}"
        )
        log_period = longest_period
    return FittedSchedule(kept, warmup_iters, log_period, changes)


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
