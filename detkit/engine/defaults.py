"""The standard way to run detkit: command line, set-up, and a trainer assembled from a config.

``tools/train_net.py`` is these pieces put together; a project's own ``train_net.py`` subclasses
:class:`DefaultTrainer` and overrides a ``build_*`` classmethod to change one part.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import DetectionCheckpointer
from ..config import ConfigError, dump_config, looks_like_override
from ..data import build_detection_test_loader, build_detection_train_loader
from ..evaluation import (
    DatasetEvaluator,
    build_evaluator,
    format_results_table,
    inference_on_dataset,
)
from ..modeling import build_model
from ..solver import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
)
from ..utils import comm
from ..utils.events import ConsoleWriter, JSONWriter, TensorboardWriter
from ..utils.file_io import strict_json, write_bytes_atomically
from ..utils.logger import setup_logger
from . import hooks
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

logger = logging.getLogger("detkit.engine")


def default_argument_parser(description: str = "detkit training") -> argparse.ArgumentParser:
    """The options of ``tools/train_net.py``; config overrides follow them as ``KEY=VALUE``."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Config overrides follow the options: SOLVER.BASE_LR=0.01 (or SOLVER.BASE_LR 0.01).",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config")
    parser.add_argument("--resume", action="store_true", help="continue from last_checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index")
    parser.add_argument(
        "--dist-url", default="auto", help="tcp://HOST:PORT of machine 0; auto: a local port"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY=VALUE config overrides")
    return parser


def parse_overrides(opts: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` strings from ``opts``, which may also hold detectron2-style ``KEY VALUE``
    pairs (``SOLVER.BASE_LR 0.01``)."""
    overrides, index = [], 0
    opts = [o for o in opts if o != "--"]
    while index < len(opts):
        item = opts[index]
        if item.startswith("--"):
            raise ConfigError(f"option {item} must come before the KEY=VALUE config overrides")
        if looks_like_override(item):
            overrides.append(item)
            index += 1
        elif "=" not in item and index + 1 < len(opts) and not looks_like_override(opts[index + 1]):
            overrides.append(f"{item}={opts[index + 1]}")
            index += 2
        elif "=" in item:  # e.g. a lower-case key: load_config names it and suggests the key
            overrides.append(item)
            index += 1
        else:
            raise ConfigError(f"override {item!r} has no value; write KEY=VALUE")
    return overrides


def seed_all(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_setup(cfg: DictConfig, args: argparse.Namespace | None = None) -> DictConfig:
    """Prepares a process to run ``cfg``; returns ``cfg`` with its seed settled.

    Creates ``OUTPUT_DIR``, sets up logging (``log.txt`` from the main process), resolves a
    negative ``SEED`` to a random one shared by all processes (so ``config.yaml`` records the seed
    actually used), seeds every generator with ``SEED + rank`` and writes the resolved config to
    ``OUTPUT_DIR/config.yaml``.
    """
    rank = comm.get_rank()
    if comm.is_main_process():
        Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, rank)
    if cfg.SEED < 0:
        cfg.SEED = comm.shared_random_seed()
    logger.info(
        f"Rank {rank} of {comm.get_world_size()}, torch {torch.__version__}, seed {cfg.SEED}"
    )
    if args is not None:
        logger.info(f"Command line arguments: {vars(args)}")
    if comm.is_main_process():
        write_config(cfg)
    seed_all(cfg.SEED + rank)
    return cfg


def write_config(cfg: DictConfig) -> None:
    """Writes the resolved ``cfg`` to ``OUTPUT_DIR/config.yaml`` (atomically)."""
    path = Path(cfg.OUTPUT_DIR) / "config.yaml"
    write_bytes_atomically(path, dump_config(cfg))
    logger.info(f"Full config saved to {path}")


class DefaultTrainer(TrainerBase):
    """A trainer built from a config: model, SGD, lr schedule, data, evaluation and hooks.

    Usage: ``trainer = DefaultTrainer(cfg); trainer.resume_or_load(resume); trainer.train()``.
    Override the ``build_*`` classmethods to change one part. Hooks, in order: iteration timer,
    lr scheduler, per-iteration seeding, periodic checkpointer, evaluation (every
    ``TEST.EVAL_PERIOD`` and at the end), and in the main process the writers (console,
    ``metrics.json``, TensorBoard) every ``SOLVER.LOG_PERIOD`` iterations.
    """

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        if cfg.SEED < 0:  # default_setup has not settled it
            cfg.SEED = comm.shared_random_seed()
        self.cfg = cfg
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
            model, None, self.optimizer, build_gradient_clipper(cfg), **amp_options
        )
        self.checkpointer = DetectionCheckpointer(
            self.model,
            cfg.OUTPUT_DIR,
            save_to_disk=comm.is_main_process(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer=self._trainer,
        )
        self.seed = cfg.SEED
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.eval_hook = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate)
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in ``OUTPUT_DIR``: restores model,
        optimizer, schedule, iteration and seed from it. Otherwise loads ``MODEL.WEIGHTS``
        (model weights only; nothing when empty) and starts at iteration 0."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            seed = int(checkpoint.get("seed", self.seed))
            if seed != self.seed:  # an unseeded run: keep the seed it started with
                self.seed = self.cfg.SEED = seed
                if comm.is_main_process():
                    write_config(self.cfg)
            logger.info(f"Resuming at iteration {self.start_iter} with seed {self.seed}")

    def build_hooks(self) -> list[hooks.HookBase | None]:
        cfg = self.cfg
        writers = None
        if comm.is_main_process():
            writers = hooks.PeriodicWriter(self.build_writers(), cfg.SOLVER.LOG_PERIOD)
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
            hooks.ReseedEachIteration(lambda: self.seed),
            hooks.PeriodicCheckpointer(
                self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, extra_state=self._extra_state
            ),
            self.eval_hook,
            writers,  # last, so it reports what the hooks before it recorded
        ]

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
        """Trains from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation."""
        self._trainer.data_loader = self.build_train_loader(self.cfg, self.start_iter)
        super().train(self.start_iter, self.max_iter)
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

        Writes ``OUTPUT_DIR/inference/<dataset>/`` (``coco_instances_results.json``,
        ``evaluation.json``) and logs each dataset's results as a table.
        """
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} test datasets"
            )
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


def log_results_summary(results: dict) -> None:
    """Logs every dataset's results table, the last thing a run prints."""
    for name, result in results.items():
        logger.info(f"Final results on {name}:\n{format_results_table(result)}")
