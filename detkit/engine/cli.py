"""The ``train_net`` command as functions, so that ``tools/train_net.py`` and every project's
``train_net.py`` are the same program: a project passes its config keys and, when it needs one,
its trainer class, and gets every option of the standard command."""

from __future__ import annotations

import argparse
import sys

from omegaconf import DictConfig

from ..checkpoint import DetectionCheckpointer, IncompatibleCheckpointError, last_checkpoint
from ..config import ConfigError, check_config, load_config
from ..utils import comm
from .defaults import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    log_results_summary,
    parse_overrides,
)
from .launch import launch
from .run_state import resolve_run_state


def load_command_line_config(
    args: argparse.Namespace, defaults: DictConfig | None = None
) -> DictConfig:
    """The config of ``args`` (``--config-file`` and the overrides) over ``defaults`` (detkit's
    when None, or detkit's plus a project's keys)."""
    return load_config(args.config_file, parse_overrides(args.opts), defaults=defaults)


def check_eval_only(args: argparse.Namespace, cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for ``--eval-only`` without trained weights to evaluate
    (random weights would give a meaningless AP with exit status 0)."""
    resumable = args.resume and last_checkpoint(cfg.OUTPUT_DIR) is not None
    if args.eval_only and not cfg.MODEL.WEIGHTS and not resumable:
        raise ConfigError(
            "--eval-only needs trained weights: give MODEL.WEIGHTS=FILE, or --resume with a "
            "last_checkpoint in OUTPUT_DIR"
        )


def train_net_main(
    args: argparse.Namespace,
    defaults: DictConfig | None = None,
    trainer_class: type[DefaultTrainer] = DefaultTrainer,
) -> dict:
    """One process of ``train_net``: settle the run state (seed, start), set up, then train (or
    only evaluate with ``--eval-only``); returns ``{dataset: results}`` of the last
    evaluation."""
    cfg = load_command_line_config(args, defaults)
    run_state = resolve_run_state(cfg, resume=args.resume and not args.eval_only)
    cfg = default_setup(cfg, args, run_state)
    if args.eval_only:
        check_eval_only(args, cfg)
        model = trainer_class.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = trainer_class.test(cfg, model)
    else:
        trainer = trainer_class(cfg, run_state=run_state)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if comm.is_main_process():
        log_results_summary(results)
    return results


def run_train_net(
    argv: list[str] | None = None,
    defaults: DictConfig | None = None,
    trainer_class: type[DefaultTrainer] = DefaultTrainer,
    description: str = "detkit training",
) -> int:
    """Runs the ``train_net`` command line ``argv`` (``sys.argv[1:]`` when None) in as many
    processes as it asks for; returns the exit status: 0, or 2 for a config error or a
    checkpoint that cannot be resumed, printed as one line. The config is loaded and checked
    here, before any process starts."""
    args = default_argument_parser(description).parse_args(argv)
    world_size = args.num_gpus * args.num_machines
    try:
        cfg = load_command_line_config(args, defaults)
        check_config(cfg, world_size)
        check_eval_only(args, cfg)
        if world_size > 1:  # a checkpoint that cannot be resumed stops here, not in workers
            resolve_run_state(cfg, resume=args.resume and not args.eval_only)
        launch(
            train_net_main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args, defaults, trainer_class),
            backend="nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo",
        )
    except (ConfigError, IncompatibleCheckpointError) as error:
        # raised in this process (before launch, or in a 1-process run)
        print(f"train_net: {error}", file=sys.stderr)
        return 2
    return 0
