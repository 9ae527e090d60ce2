"""Optimizer and learning-rate schedule builders."""

from .build import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    get_optimizer_params,
    reduce_param_groups,
)
from .lr_scheduler import LRMultiplier, fit_schedule_to_run, warmup_multistep_schedule

__all__ = [
    "LRMultiplier",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_optimizer",
    "fit_schedule_to_run",
    "get_optimizer_params",
    "reduce_param_groups",
    "warmup_multistep_schedule",
]
