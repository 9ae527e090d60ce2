"""The standard hooks: timing, lr schedule, per-iteration seeding, checkpoints, evaluation,
validation losses, metric writers, stopping on a signal."""

from __future__ import annotations

import datetime
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer

from ..checkpoint import DetectionCheckpointer
from ..modeling.sampling import set_sampling_generator
from ..utils import comm
from ..utils.events import EventWriter
from ..utils.stop_signals import STOP_SIGNALS
from .signals import TrainingInterruptedError, restore_handlers
from .train_loop import HookBase

logger = logging.getLogger("detkit.engine")


class IterationTimer(HookBase):
    """Records each step's duration as ``time`` and logs the training speed at the end,
    leaving out the first ``warmup_iters`` steps (start-up costs, not training speed)."""

    def __init__(self, warmup_iters: int = 3) -> None:
        self._warmup_iters = warmup_iters
        self._step_start = 0.0
        self._timed_seconds = 0.0
        self._timed_steps = 0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        seconds = time.perf_counter() - self._step_start
        if self.trainer.iter - self.trainer.start_iter >= self._warmup_iters:
            self._timed_seconds += seconds
            self._timed_steps += 1
        self.trainer.storage.put_scalar("time", seconds)

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        message = f"Total training time: {datetime.timedelta(seconds=round(total))}"
        if self._timed_steps:
            speed = self._timed_seconds / self._timed_steps
            message += f" ({speed:.4f} s/it over {self._timed_steps} iterations after warm-up)"
        logger.info(message)


class LRScheduler(HookBase):
    """Records the lr used by each step as ``lr``, then advances the per-iteration schedule."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
    ) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler
        # the group with the most weights stands for "the" lr (biases may use a multiple of it)
        self._reported_group = max(
            range(len(optimizer.param_groups)),
            key=lambda i: sum(p.numel() for p in optimizer.param_groups[i]["params"]),
        )

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._reported_group]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self._scheduler.step()


class ReseedEachIteration(HookBase):
    """Seeds each step's randomness from ``(seed, rank, iteration)`` before the step.

    Two generators get the step's seed: the RoI sampler's own, a CPU ``torch.Generator`` that
    the RoI heads hand the sampler (:func:`~detkit.modeling.sampling.set_sampling_generator`;
    cleared after training), and torch's default generators, which dropout and any other draw
    of the model use. The model's randomness then depends on nothing but the iteration, so a
    run resumed from a checkpoint takes exactly the steps of a run that never stopped; the
    sampler draws what it drew from the reseeded default generator before it had its own.
    ``seed`` is the run's seed, settled before the hooks are built.
    """

    def __init__(self, seed: int) -> None:
        self._seed = int(seed)

    def before_step(self) -> None:
        entropy = [self._seed, comm.get_rank(), self.trainer.iter]
        step_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        torch.manual_seed(step_seed)
        set_sampling_generator(torch.Generator().manual_seed(step_seed))

    def after_train(self) -> None:
        set_sampling_generator(None)


class PeriodicCheckpointer(HookBase):
    """Saves a checkpoint every ``period`` iterations and ``model_final`` at the end.

    ``extra_state`` returns what else the checkpoint records (the iteration is always saved).
    Checkpoints are written by the main process only (``Checkpointer.save_to_disk``).
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_to_keep: int | None = None,
        extra_state: Callable[[], dict] | None = None,
    ) -> None:
        self._checkpointer = checkpointer
        self._period = period
        self._max_to_keep = max_to_keep
        self._extra_state = extra_state or dict
        self._periodic: _FvcorePeriodicCheckpointer | None = None

    def before_train(self) -> None:
        self._periodic = _FvcorePeriodicCheckpointer(
            self._checkpointer, self._period, self.trainer.max_iter, self._max_to_keep
        )

    def after_step(self) -> None:
        self._periodic.step(self.trainer.iter, **self._extra_state())


class EvalHook(HookBase):
    """Runs ``eval_function`` every ``period`` iterations (0: never) and after the last one.

    Its results, ``{dataset: {task: {metric: value}}}`` or ``{task: {metric: value}}``, are
    recorded as scalars named ``dataset/task/metric`` at the iteration they were measured.
    """

    def __init__(self, period: int, eval_function: Callable[[], dict]) -> None:
        self._period = period
        self._eval_function = eval_function
        self.latest_results: dict = {}

    def _evaluate(self) -> None:
        self.latest_results = self._eval_function()
        if comm.is_main_process():
            flat = _flatten(self.latest_results)
            self.trainer.storage.put_scalars(smoothing_hint=False, **flat)
        comm.synchronize()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self._period > 0 and done % self._period == 0 and done != self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:  # finished, not interrupted
            self._evaluate()


class ValidationLoss(HookBase):
    """Every ``period`` iterations (0: never), the training losses of the model on ``loader``
    (a test set with its ground truth, its test-time transforms), averaged and recorded as
    ``validation/<loss>`` and ``validation/total_loss``: how the model fits data it does not
    learn from. It runs without gradients, with batch norm and dropout in eval mode (so nothing
    of the model changes); the generators it draws from for sampling are reseeded before every
    training step, so training goes on exactly as without it."""

    def __init__(self, period: int, loader: Callable[[], object]) -> None:
        self._period = period
        self._loader = loader  # built on first use: the data is read only when needed

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self._period > 0 and done % self._period == 0:
            self._record(self._mean_losses())

    @torch.no_grad()
    def _mean_losses(self) -> dict[str, float]:
        model = self.trainer.model
        frozen = [m for m in model.modules() if isinstance(m, _EVAL_MODE_LAYERS) and m.training]
        for module in frozen:
            module.eval()
        sums: dict[str, float] = {}
        batches = 0
        try:
            for batch in self._loader():
                for name, value in model(batch).items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                batches += 1
        finally:
            for module in frozen:
                module.train()
        totals = comm.all_gather((sums, batches))
        count = sum(n for _, n in totals)
        names = sorted({name for part, _ in totals for name in part})
        means = {
            name: sum(part.get(name, 0.0) for part, _ in totals) / max(count, 1) for name in names
        }
        means["total_loss"] = sum(means.values())
        return means

    def _record(self, means: dict[str, float]) -> None:
        if comm.is_main_process():
            self.trainer.storage.put_scalars(
                smoothing_hint=False, **{f"validation/{name}": v for name, v in means.items()}
            )
            logger.info(
                "Validation losses: "
                + "  ".join(f"{name}: {value:.4g}" for name, value in means.items())
            )


_EVAL_MODE_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)


def _flatten(results: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


class PeriodicWriter(HookBase):
    """Calls every writer each ``period`` iterations, after the last one, and closes them."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        self._period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self._period == 0 or done == self.trainer.max_iter:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            writer.write()  # e.g. the final evaluation's results
            writer.close()


class StopOnSignal(HookBase):
    """On SIGTERM (what cluster schedulers send), SIGINT (Ctrl-C) or SIGHUP (the terminal
    closed): finishes the iteration under way, saves its checkpoint ``model_XXXXXXX.pth``
    (unless the periodic one just did), logs why and stops training with
    :class:`TrainingInterruptedError` (exit status 128 + signal), from which ``--resume``
    continues exactly.

    Register it last, so the iteration's hooks (writers included) have run. A second signal
    acts at once, with the handlers from before training (in ``train_net``: one line, exit
    128 + signal, see :mod:`detkit.engine.signals`); so do signals during the final
    evaluation, after the last iteration. With several processes a signal to any of them stops
    all at the same iteration; rank 0 saves and logs.
    """

    def __init__(
        self, checkpointer: DetectionCheckpointer, extra_state: Callable[[], dict] | None = None
    ) -> None:
        self._checkpointer = checkpointer
        self._extra_state = extra_state or dict
        self._received: int | None = None
        self._previous: dict[int, object] = {}

    def before_train(self) -> None:
        self._received = None
        if threading.current_thread() is not threading.main_thread():
            logger.debug("StopOnSignal: not in the main thread, signals keep their handlers")
            return
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}

    def _handle(self, signum: int, frame: object) -> None:
        self._received = signum
        self._restore()  # a second signal acts at once

    def _restore(self) -> None:
        restore_handlers(self._previous)
        self._previous = {}

    def after_step(self) -> None:
        received = self._received
        if comm.get_world_size() > 1:
            received = next((s for s in comm.all_gather(received) if s is not None), None)
        iteration = self.trainer.iter
        if received is None:
            if iteration + 1 >= self.trainer.max_iter:
                self._restore()
            return
        if self._checkpointer.saved_iteration != iteration:
            self._checkpointer.save(
                f"model_{iteration:07d}", iteration=iteration, **self._extra_state()
            )
        if comm.is_main_process():
            logger.warning(
                f"Received {signal.Signals(received).name}: stopped after iteration {iteration} "
                f"with its checkpoint saved; exit status {128 + received}; continue with --resume"
            )
        raise TrainingInterruptedError(received, iteration)

    def after_train(self) -> None:
        self._restore()
