"""Training and running detkit: the trainer and its hooks, the default set-up, launching."""

from ..config import check_config
from .cli import run_train_net, train_net_main
from .defaults import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
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
from .predictor import DefaultPredictor
from .run_state import RunState, resolve_run_state
from .tool_setup import setup_config
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "DefaultPredictor",
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "ReseedEachIteration",
    "RunState",
    "SimpleTrainer",
    "TrainerBase",
    "check_config",
    "default_argument_parser",
    "default_setup",
    "launch",
    "resolve_run_state",
    "run_train_net",
    "seed_all",
    "setup_config",
    "train_net_main",
    "write_config",
]
