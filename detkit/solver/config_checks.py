"""The solver's up-front check, run by :func:`detkit.config.check_config` (registered when
:mod:`detkit.solver` is imported): the lr schedule, fitted to the run as training fits it, is
one :func:`~detkit.solver.warmup_multistep_schedule` builds."""

from __future__ import annotations

from omegaconf import DictConfig

from ..config import register_config_check
from .build import fitted_schedule
from .lr_scheduler import warmup_multistep_schedule


@register_config_check
def _schedule_problems(cfg: DictConfig) -> list[str]:
    solver, fitted = cfg.SOLVER, fitted_schedule(cfg)
    try:
        warmup_multistep_schedule(
            solver.MAX_ITER, fitted.steps, solver.GAMMA, fitted.warmup_iters, solver.WARMUP_FACTOR
        )
    except ValueError as error:
        return [str(error)]
    return []
