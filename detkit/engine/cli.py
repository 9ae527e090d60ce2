"""The ``train_net`` command as functions, so that ``tools/train_net.py`` and every project's
``train_net.py`` are the same program: a project passes its config keys and, when it needs one,
its trainer class, and gets every option of the standard command."""

from __future__ import annotations

import argparse
import signal
import sys

from omegaconf import DictConfig

from ..checkpoint import (
    DetectionCheckpointer,
    PartialWeightsError,
    last_checkpoint,
    saved_checkpoints,
)
from ..config import ConfigError, check_config
from ..utils.device import chosen_device
from ..utils.paths import OutputPathError, check_output_folder
from .defaults import DefaultTrainer, default_argument_parser, default_setup
from .launch import launch, torchrun_process
from .run_state import check_resumable, resolve_run_state
from .signals import StoppedBySignal, TrainingInterruptedError, raising_on_signals, stop_signal
from .tool_setup import USER_ERRORS, debug_requested, parse_command_line, setup_config


def check_eval_only(args: argparse.Namespace, cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for ``--eval-only`` without trained weights to evaluate
    (random weights would give a meaningless AP with exit status 0)."""
    resumable = args.resume and last_checkpoint(cfg.OUTPUT_DIR) is not None
    if args.eval_only and not cfg.MODEL.WEIGHTS and not resumable:
        raise ConfigError(
            "--eval-only needs trained weights: give MODEL.WEIGHTS=FILE, or --resume with a "
            "last_checkpoint in OUTPUT_DIR"
        )


def check_output_dir(args: argparse.Namespace, cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for an ``OUTPUT_DIR`` that cannot be written into (a file, a
    link to nothing, a path under a file, a folder without write permission), and for a
    training run without ``--resume`` into an ``OUTPUT_DIR`` that holds an earlier run's
    checkpoints: starting again from iteration 0 would overwrite them, ``model_final.pth``
    included. Evaluating writes no checkpoint."""
    try:
        check_output_folder(cfg.OUTPUT_DIR)
    except OutputPathError as error:
        raise ConfigError(
            f"OUTPUT_DIR={cfg.OUTPUT_DIR} cannot hold the run ({error}); choose another OUTPUT_DIR"
        ) from None
    found = saved_checkpoints(cfg.OUTPUT_DIR)
    if args.eval_only or args.resume or not found:
        return
    names = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
    raise ConfigError(
        f"OUTPUT_DIR={cfg.OUTPUT_DIR} holds the checkpoints of an earlier run ({names}); pass "
        "--resume to continue it, or choose another OUTPUT_DIR for a new run"
    )


def check_process_counts(args: argparse.Namespace) -> None:
    """Raises :class:`ConfigError` naming ``--num-gpus``, ``--num-machines`` or
    ``--machine-rank`` when they do not describe at least one process."""
    problems = []
    if args.num_gpus < 1:
        problems.append(
            f"--num-gpus {args.num_gpus}: give at least 1 process per machine (without GPUs "
            "they are CPU workers)"
        )
    if args.num_machines < 1:
        problems.append(f"--num-machines {args.num_machines}: give at least 1 machine")
    elif not 0 <= args.machine_rank < args.num_machines:
        problems.append(
            f"--machine-rank {args.machine_rank}: must be in [0, {args.num_machines}) for "
            f"--num-machines {args.num_machines}"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def train_net_main(
    args: argparse.Namespace,
    defaults: DictConfig | None = None,
    trainer_class: type[DefaultTrainer] = DefaultTrainer,
) -> dict:
    """One process of ``train_net``: resolve the run state (seed, start, the checkpoint to
    resume, read once) once, set up with it, then train (or only evaluate with
    ``--eval-only``); returns ``{dataset: results}`` of the last evaluation."""
    cfg = setup_config(args, defaults)
    check_eval_only(args, cfg)
    check_output_dir(args, cfg)
    run_state = resolve_run_state(cfg, resume=args.resume and not args.eval_only)
    cfg = default_setup(cfg, args, run_state)
    if args.eval_only:
        model = trainer_class.build_model(cfg)
        allow_partial = getattr(args, "allow_partial_weights", False)
        checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, allow_partial=allow_partial)
        try:
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        except PartialWeightsError as error:  # only this command can load them anyway
            raise PartialWeightsError(
                f"{error}; --allow-partial-weights evaluates them anyway"
            ) from None
        results = trainer_class.test(cfg, model)
    else:
        trainer = trainer_class(cfg, run_state=run_state)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    return results


def run_train_net(
    argv: list[str] | None = None,
    defaults: DictConfig | None = None,
    trainer_class: type[DefaultTrainer] = DefaultTrainer,
    description: str = "detkit training",
) -> int:
    """Runs the ``train_net`` command line ``argv`` (``sys.argv[1:]`` when None) in as many
    processes as it asks for; returns the exit status.

    0: done. 2: a user error (:data:`USER_ERRORS`: the config, the process counts, a
    checkpoint or weights file that cannot be used, a dataset refused), printed as one line on
    stderr without a traceback, which ``--debug`` or ``DETKIT_DEBUG=1`` shows instead.
    128 + signal (143, 130, 129): stopped by SIGTERM, SIGINT or SIGHUP, after saving a
    checkpoint when training (:mod:`detkit.engine.signals`); the processes this command spawns
    get the signals it receives. The config is loaded and checked here, before any process
    starts."""
    words = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(words)
    try:
        with raising_on_signals():  # outside training: one line, exit 128 + signal
            args = parse_command_line(default_argument_parser(description), words, defaults)
            check_process_counts(args)
            under_torchrun = torchrun_process()
            world_size = (
                under_torchrun.world_size if under_torchrun else args.num_gpus * args.num_machines
            )
            cfg = setup_config(args, defaults)
            check_config(cfg, world_size)
            check_eval_only(args, cfg)
            check_output_dir(args, cfg)
            if world_size > 1 and args.resume and not args.eval_only:
                check_resumable(cfg)  # an unusable checkpoint stops here, not in the processes
            launch(
                train_net_main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args, defaults, trainer_class),
                # chosen quietly: the processes, their logging set up, say which device they use
                backend="nccl" if chosen_device(cfg.MODEL.DEVICE).startswith("cuda") else "gloo",
            )
    except TrainingInterruptedError as stop:  # the trainer saved a checkpoint and logged why
        return stop.exit_status
    except (StoppedBySignal, KeyboardInterrupt) as stop:  # setting up, evaluating, 2nd signal
        if debug:
            raise
        signum = stop_signal(stop)
        print(
            f"train_net: interrupted ({signal.Signals(signum).name}) where no checkpoint is "
            "saved (setting up, evaluating, or a second signal); the checkpoints written "
            "before are intact, --resume continues from the newest",
            file=sys.stderr,
        )
        return 128 + signum
    except USER_ERRORS as error:  # raised in this process (before launch, or in a 1-process run)
        if debug:
            raise
        print(f"train_net: {error}", file=sys.stderr)
        return 2
    return 0
