"""Training and running detkit: the trainer and its hooks, the default set-up, launching."""

from .defaults import (
    DefaultTrainer,
    check_config,
    default_argument_parser,
    default_setup,
    log_results_summary,
    parse_overrides,
    seed_all,
    write_config,
)
from .hooks import (
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    ReseedEachIteration,
)
from .launch import launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "ReseedEachIteration",
    "SimpleTrainer",
    "TrainerBase",
    "check_config",
    "default_argument_parser",
    "default_setup",
    "launch",
    "log_results_summary",
    "parse_overrides",
    "seed_all",
    "write_config",
]
