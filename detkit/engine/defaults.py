"""The standard way to run detkit: command line, set-up, and a trainer assembled from a config.

``tools/train_net.py`` is these pieces put together; a project's own ``train_net.py`` subclasses
:class:`DefaultTrainer` and overrides a ``build_*`` classmethod to change one part.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, read_write
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import (
    DetectionCheckpointer,
    ResumePoint,
    remove_interrupted_saves,
    resumable_checkpoint,
)
from ..config import ConfigError, dump_config
from ..data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    setup_datasets,
)
from ..data.transforms import build_transforms
from ..evaluation import (
    DatasetEvaluator,
    build_evaluator,
    format_results_table,
    inference_on_dataset,
)
from ..modeling import build_inference_model, build_model
from ..solver import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    fitted_schedule,
)
from ..utils import comm
from ..utils.env import collect_env_info
from ..utils.events import ConsoleWriter, JSONWriter, TensorboardWriter
from ..utils.file_io import strict_json, write_bytes_atomically
from ..utils.logger import setup_logger
from . import hooks
from .run_state import RunState, resolve_run_state, resumed_run_state
from .tool_setup import add_common_arguments
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

logger = logging.getLogger("detkit.engine")


def default_argument_parser(description: str = "detkit training") -> argparse.ArgumentParser:
    """The options of ``tools/train_net.py``; config overrides follow them as ``KEY=VALUE``."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Config overrides follow the options: SOLVER.BASE_LR=0.01 (or SOLVER.BASE_LR 0.01).",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest intact checkpoint"
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="let --eval-only evaluate weights that leave part of the model uninitialised",
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index")
    parser.add_argument(
        "--dist-url", default="auto", help="tcp://HOST:PORT of machine 0; auto: a local port"
    )
    add_common_arguments(parser)  # --debug and the overrides, as every tool takes them
    return parser


def seed_all(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_setup(
    cfg: DictConfig, args: argparse.Namespace | None, run_state: RunState
) -> DictConfig:
    """Prepares a process to run ``cfg`` from ``run_state``, the run state resolved once for the
    process (:func:`resolve_run_state`: with ``--resume`` the checkpoint's seed, and for a
    negative ``SEED`` otherwise a random one shared by all processes); returns the config the
    run uses (:func:`run_config`: datasets set up, ``SEED`` that seed, read-only; ``cfg``
    itself is not changed).

    Creates ``OUTPUT_DIR``, sets up logging (``log.txt`` from the main process), writes the
    config, with the seed actually used, to ``OUTPUT_DIR/config.yaml`` and seeds every
    generator with the seed + rank. With ``args.eval_only`` the log and the config go to
    ``OUTPUT_DIR/inference/`` instead, so evaluating never rewrites a training run's files.
    """
    cfg = run_config(cfg, run_state)
    rank = comm.get_rank()
    training = not getattr(args, "eval_only", False)
    run_dir = Path(cfg.OUTPUT_DIR) / ("" if training else "inference")
    if comm.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(run_dir, rank)
    logger.info(
        f"Rank {rank} of {comm.get_world_size()}, torch {torch.__version__}, seed {cfg.SEED}"
    )
    if comm.is_main_process():
        logger.info("Environment:\n" + collect_env_info())
    if args is not None:
        logger.info(f"Command line arguments: {vars(args)}")
    if comm.is_main_process():
        write_config(cfg, run_dir)
    seed_all(cfg.SEED + rank)
    return cfg


def run_config(cfg: DictConfig, run_state: RunState) -> DictConfig:
    """``cfg`` as the run uses it: its datasets set up (:func:`detkit.data.setup_datasets`,
    which changes nothing in a config a tool has set up), ``SEED`` the run's seed (so that
    ``config.yaml``, the data loader and every part built from it see the seed used), and
    read-only. ``cfg`` itself when it is that already (as :func:`default_setup` returns it),
    else a copy: ``cfg`` is not changed. A run state resolved from another ``SEED`` >= 0 is
    refused."""
    if cfg.SEED >= 0 and run_state.seed != cfg.SEED:
        raise ValueError(
            f"the run state's seed {run_state.seed} is not SEED={cfg.SEED}; resolve it from this "
            "config: resolve_run_state(cfg, resume)"
        )
    if run_state.seed == cfg.SEED and OmegaConf.is_readonly(cfg):
        return cfg
    settled = copy.deepcopy(cfg)
    with read_write(settled):
        setup_datasets(settled)
        settled.SEED = run_state.seed
    OmegaConf.set_readonly(settled, True)
    return settled


def write_config(cfg: DictConfig, folder: str | Path | None = None) -> None:
    """Writes the resolved ``cfg`` to ``folder/config.yaml`` (atomically; ``OUTPUT_DIR`` by
    default)."""
    path = Path(cfg.OUTPUT_DIR if folder is None else folder) / "config.yaml"
    write_bytes_atomically(path, dump_config(cfg))
    logger.info(f"Full config saved to {path}")


class DefaultTrainer(TrainerBase):
    """A trainer built from a config: model, SGD, lr schedule, data, evaluation and hooks.

    Usage: ``trainer = DefaultTrainer(cfg); trainer.resume_or_load(resume); trainer.train()``.
    Override the ``build_*`` classmethods to change one part. Hooks, in order: iteration timer,
    lr scheduler, per-iteration seeding, periodic checkpointer, evaluation (every
    ``TEST.EVAL_PERIOD`` and at the end), and in the main process the writers (console,
    ``metrics.json``, TensorBoard) every ``SOLVER.LOG_PERIOD`` iterations (fitted to a short
    run: :func:`detkit.solver.fitted_schedule`).

    ``run_state`` is the run's seed and start, resolved once before the trainer is built
    (:func:`resolve_run_state`; ``train_net`` passes the one it gave :func:`default_setup`),
    with the checkpoint a resumed run continues, already read. Without it the trainer resolves
    a fresh start itself with the same function (detectron2's ``DefaultTrainer(cfg)``: ``SEED``,
    or a random seed when negative), and :meth:`resume_or_load` the resumed state. ``cfg`` is
    read-only for the trainer: ``self.cfg`` is the run's config (:func:`run_config`), and
    ``cfg`` itself is not changed. Subclasses that override ``__init__`` pass ``run_state`` on.

    The trainer sets up the datasets of ``cfg`` first (:func:`detkit.data.setup_datasets`:
    ``DATASETS.REGISTER`` registered, class names filled), which every tool has done after
    loading and which changes nothing then: a config loaded and changed in Python trains as
    detectron2's does, on a dataset registered in Python included.
    """

    def __init__(self, cfg: DictConfig, run_state: RunState | None = None) -> None:
        super().__init__()
        self._state_given = run_state is not None
        self.run_state = run_state if run_state is not None else resolve_run_state(cfg, False)
        self.start_iter = self.run_state.start_iter
        self.cfg = cfg = run_config(cfg, self.run_state)
        model = self.build_model(cfg)
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.model = model
        if comm.get_world_size() > 1:
            device_ids = [comm.get_local_rank()] if model.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        trainer_class = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        amp_options = {"device_type": self.model.device.type} if cfg.SOLVER.AMP.ENABLED else {}
        self._trainer = trainer_class(
            model,
            None,
            self.optimizer,
            build_gradient_clipper(cfg),
            max_nonfinite_steps=cfg.SOLVER.MAX_NONFINITE_STEPS,
            **amp_options,
        )
        self.checkpointer = DetectionCheckpointer(
            self.model,
            cfg.OUTPUT_DIR,
            save_to_disk=comm.is_main_process(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer=self._trainer,
        )
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.eval_hook = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate)
        self.register_hooks(self.build_hooks())

    @property
    def seed(self) -> int:
        """The run's seed, settled before the hooks were built."""
        return self.run_state.seed

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in ``OUTPUT_DIR``: restores model, optimizer,
        schedule and gradient scaler from the newest intact one (which warns about a corrupt
        newer one it skips). Otherwise loads ``MODEL.WEIGHTS`` (model weights only, logging
        what they fill; nothing when empty) and starts at iteration 0.

        A trainer given its run state loads the checkpoint that state was resolved with, as it
        was read then (the file is not read again); ``resume`` must be the flag it was resolved
        with, or :class:`ConfigError` says how they differ. A trainer that resolved its own
        fresh start resolves the resumed state here (:func:`resumed_run_state`), and the
        checkpoint must have been trained with the trainer's seed, or :class:`ConfigError` says
        how to resolve the state before building the trainer.
        """
        state = self._state_to_load(resume)
        if state.checkpoint is None:
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
            return
        self.checkpointer.load_resume_point(state.resume_point or ResumePoint(state.checkpoint))
        self.run_state, self.start_iter = state, state.start_iter
        logger.info(f"Resuming at iteration {self.start_iter} with seed {self.seed}")

    def _state_to_load(self, resume: bool) -> RunState:
        """The run state ``resume_or_load(resume)`` loads (see there)."""
        state = self.run_state
        if not self._state_given:
            found = resumed_run_state(self.cfg.OUTPUT_DIR, self.seed) if resume else None
            if found is not None and found.seed != self.seed:
                raise ConfigError(
                    f"{found.checkpoint} was trained with seed {found.seed} but this trainer's "
                    f"seed is {self.seed}; a resumed run keeps its seed to continue exactly: set "
                    f"SEED={found.seed}, or resolve the run state before building the trainer, "
                    "which takes the checkpoint's seed for SEED=-1 "
                    "(DefaultTrainer(cfg, resolve_run_state(cfg, resume=True)))"
                )
            return found or state
        if resume and state.checkpoint is None:
            found = resumable_checkpoint(self.cfg.OUTPUT_DIR, warn=False)
            if found is not None:
                raise ConfigError(
                    f"the run state was settled to start at {state}, but "
                    f"resume_or_load(resume=True) finds {found}; resolve it with resume=True, "
                    "after the last checkpoint is written"
                )
        if not resume and state.checkpoint is not None:
            raise ConfigError(
                f"the run state was settled to start at {state}, but "
                "resume_or_load(resume=False) starts afresh; resolve it with resume=False"
            )
        return state

    def build_hooks(self) -> list[hooks.HookBase | None]:
        cfg = self.cfg
        writers = None
        if comm.is_main_process():
            writers = hooks.PeriodicWriter(self.build_writers(), fitted_schedule(cfg).log_period)
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
            hooks.ReseedEachIteration(self.seed),
            hooks.PeriodicCheckpointer(
                self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, extra_state=self._extra_state
            ),
            self.eval_hook,
            self.build_validation_loss_hook(),
            writers,  # after the others, so it reports what the hooks before it recorded
            hooks.StopOnSignal(self.checkpointer, extra_state=self._extra_state),  # after all
        ]

    def build_validation_loss_hook(self) -> hooks.ValidationLoss | None:
        """Validation losses on ``DATASETS.TEST[0]`` every ``TEST.VAL_LOSS_PERIOD``
        iterations: its records through a training mapper (so they keep their ground truth)
        with the test-time transforms."""
        cfg = self.cfg
        if cfg.TEST.VAL_LOSS_PERIOD <= 0 or not cfg.DATASETS.TEST:
            return None
        mapper = DatasetMapper(
            True,
            build_transforms(cfg, is_train=False),
            cfg.MODEL.INPUT_FORMAT,
            seed=0,
            max_image_pixels=cfg.INPUT.MAX_IMAGE_PIXELS,
        )
        name = cfg.DATASETS.TEST[0]
        return hooks.ValidationLoss(
            cfg.TEST.VAL_LOSS_PERIOD,
            lambda: build_detection_test_loader(cfg, name, mapper=mapper),
        )

    def _extra_state(self) -> dict:
        return {"seed": self.seed}

    def build_writers(self) -> list:
        output = Path(self.cfg.OUTPUT_DIR)
        output.mkdir(parents=True, exist_ok=True)
        return [
            ConsoleWriter(self.max_iter),
            JSONWriter(output / "metrics.json"),
            TensorboardWriter(output),
        ]

    def train(self) -> dict:
        """Trains from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation.

        A run resumed at or past ``SOLVER.MAX_ITER`` trains nothing: it says so and only runs
        the final evaluation. Temporary files of saves killed mid-write are removed first. Every
        dataset is read, and so checked, before the first iteration: the training sets, then
        the test sets, so a bad box in one stops the run at its start, not after the training.
        """
        start = self.run_state.start_iter
        if comm.is_main_process():
            remove_interrupted_saves(self.cfg.OUTPUT_DIR)
        if start >= self.max_iter:
            logger.info(
                f"Nothing left to train: the run is at iteration {start} and SOLVER.MAX_ITER="
                f"{self.max_iter}; running the final evaluation only (raise SOLVER.MAX_ITER to "
                "train on)"
            )
        else:
            self._trainer.data_loader = self.build_train_loader(self.cfg, start)
        for name in self.cfg.DATASETS.TEST:  # read now, so that a refused set stops the start
            self.build_test_loader(self.cfg, name)
        super().train(start, self.max_iter)
        return self.eval_hook.latest_results

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def _evaluate(self) -> dict:
        comm.broadcast_buffers(self.model)  # every process evaluates rank 0's model
        return self.test(self.cfg, self.model)

    @classmethod
    def build_model(cls, cfg: DictConfig) -> nn.Module:
        model = build_model(cfg)
        logger.debug(f"Model:\n{model}")
        return model

    @classmethod
    def build_optimizer(cls, cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: DictConfig, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: DictConfig, start_iter: int = 0):
        return build_detection_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: DictConfig, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(
        cls, cfg: DictConfig, dataset_name: str, output_folder: str | Path
    ) -> DatasetEvaluator:
        """The evaluators named by ``TEST.EVALUATORS`` or, when empty, by the dataset's
        ``evaluator_type`` metadata, from ``EVALUATOR_REGISTRY``
        (:func:`detkit.evaluation.build_evaluator`)."""
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(
        cls,
        cfg: DictConfig,
        model: nn.Module,
        evaluators: Sequence[DatasetEvaluator] | None = None,
    ) -> OrderedDict:
        """Evaluates ``model`` on every ``DATASETS.TEST`` set; returns ``{dataset: results}``.

        The model runs as inference runs it (:func:`~detkit.modeling.build_inference_model`:
        over the test pyramid when ``TEST.MIN_SIZES`` lists one), as ``DefaultPredictor`` runs
        it. Writes ``OUTPUT_DIR/inference/<dataset>/`` (``coco_instances_results.json``,
        ``evaluation.json``) and logs each dataset's results as a table.
        """
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} test datasets"
            )
        model = build_inference_model(cfg, model)
        results = OrderedDict()
        for index, name in enumerate(cfg.DATASETS.TEST):
            folder = Path(cfg.OUTPUT_DIR) / "inference" / name
            loader = cls.build_test_loader(cfg, name)  # first: it prepares the data, once
            evaluator = evaluators[index] if evaluators else cls.build_evaluator(cfg, name, folder)
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                write_bytes_atomically(
                    folder / "evaluation.json", strict_json(results[name], indent=2)
                )
                logger.info(f"Evaluation results on {name}:\n{format_results_table(results[name])}")
        return results
