"""Optimizer and learning-rate schedule builders."""

from . import config_checks  # noqa: F401  (registers the package's config checks)
from .build import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    fitted_schedule,
    get_optimizer_params,
    reduce_param_groups,
)
from .lr_scheduler import (
    FittedSchedule,
    LRMultiplier,
    fit_schedule_to_run,
    warmup_multistep_schedule,
)

__all__ = [
    "FittedSchedule",
    "LRMultiplier",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_optimizer",
    "fit_schedule_to_run",
    "fitted_schedule",
    "get_optimizer_params",
    "reduce_param_groups",
    "warmup_multistep_schedule",
]
