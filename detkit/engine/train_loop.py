"""The training loop: a trainer runs steps between hooks; SimpleTrainer's step is one SGD update.

Hooks see every phase (``before_train``, ``before_step``, ``after_step``, ``after_train``) in the
order they were registered, and everything that is not the update itself (lr schedule, timing,
checkpoints, evaluation, writing metrics) lives in a hook.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..utils import comm
from ..utils.events import EventStorage, get_event_storage
from .signals import TrainingInterruptedError

logger = logging.getLogger("detkit.engine")


class HookBase:
    """Something done around training steps; ``self.trainer`` is the trainer it is registered in.

    During ``before_step``/``after_step``, ``self.trainer.iter`` is the iteration being run;
    after a finished run ``after_train`` sees ``trainer.iter == trainer.max_iter``.
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TrainerBase:
    """Runs ``run_step`` for iterations ``[start_iter, max_iter)`` with hooks around it."""

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Adds hooks (``None`` entries are skipped); they run in the order given."""
        for hook in hooks:
            if hook is None:
                continue
            # a weak reference: the trainer owns its hooks, not the other way round
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                self.iter = max_iter  # marks training as finished (also when nothing was left)
            except TrainingInterruptedError:
                raise  # a requested stop, logged by whoever stopped it
            except Exception:
                logger.exception(f"Exception during training at iteration {self.iter}:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for hook in self._hooks:
            hook.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.before_step()

    def after_step(self) -> None:
        for hook in self._hooks:
            hook.after_step()

    def run_step(self) -> None:
        raise NotImplementedError


class SimpleTrainer(TrainerBase):
    """One step: next batch, losses, backward, optional gradient clipping, optimizer step.

    The model returns a dict of losses in training mode. A non-finite loss is caught before
    the backward pass, so the weights never take that update: the step is skipped with a
    warning while fewer than ``max_nonfinite_steps`` steps of the run were (the count is
    checkpointed), and otherwise ``FloatingPointError`` stops training (``0``, the default:
    at the first one).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable | None,
        optimizer: torch.optim.Optimizer,
        gradient_clipper: Callable[[Iterable[Tensor]], object] | None = None,
        max_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        if max_nonfinite_steps < 0:
            raise ValueError(
                f"max_nonfinite_steps (SOLVER.MAX_NONFINITE_STEPS) must be >= 0, got "
                f"{max_nonfinite_steps}"
            )
        model.train()
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.gradient_clipper = gradient_clipper
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0
        self._data_iter = None

    def next_batch(self) -> tuple[list[dict], float]:
        """The next batch and the seconds spent waiting for it."""
        if self._data_iter is None:
            if self.data_loader is None:
                raise RuntimeError("SimpleTrainer: no data_loader to train from")
            self._data_iter = iter(self.data_loader)
        start = time.perf_counter()
        batch = next(self._data_iter)
        return batch, time.perf_counter() - start

    def run_step(self) -> None:
        batch, data_time = self.next_batch()
        loss_dict = self.model(batch)
        total = self.check_losses(loss_dict)
        if total is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.gradient_clipper is not None:
            self.gradient_clipper(self._trainable_parameters())
        self.optimizer.step()
        self.write_metrics(loss_dict, data_time)

    def check_losses(self, loss_dict: dict[str, Tensor]) -> Tensor | None:
        """The sum of the losses, or None when one is infinite or NaN and the step is skipped
        (see the class); ``FloatingPointError`` naming the iteration and every loss when it is
        one more than ``max_nonfinite_steps``. With several processes they agree on skipping."""
        total = sum(loss_dict.values())
        finite = bool(torch.isfinite(total))
        if self.max_nonfinite_steps and comm.get_world_size() > 1:
            finite = all(comm.all_gather(finite))  # all skip, or none: DDP must not diverge
        if finite:
            return total
        self.nonfinite_steps += 1
        values = ", ".join(f"{k}={v.item():.6g}" for k, v in loss_dict.items())
        limit = self.max_nonfinite_steps
        if self.nonfinite_steps > limit:
            skipped = (
                f" (after skipping {limit}, SOLVER.MAX_NONFINITE_STEPS={limit})" if limit else ""
            )
            raise FloatingPointError(
                f"loss became infinite or NaN at iteration {self.iter}: {values}{skipped}; lower "
                "SOLVER.BASE_LR, add warm-up (SOLVER.WARMUP_ITERS) or clip gradients "
                "(SOLVER.CLIP_GRADIENTS.ENABLED)"
            )
        logger.warning(
            f"loss became infinite or NaN at iteration {self.iter}: {values}; step skipped, the "
            f"weights are unchanged ({self.nonfinite_steps} of SOLVER.MAX_NONFINITE_STEPS={limit})"
        )
        return None

    def _trainable_parameters(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def write_metrics(self, loss_dict: dict[str, Tensor], data_time: float) -> None:
        """Records the losses (averaged over processes) and the slowest process's data time."""
        metrics = {name: float(value.detach()) for name, value in loss_dict.items()}
        metrics["data_time"] = data_time
        gathered = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in gathered))
        losses = {name: sum(m[name] for m in gathered) / len(gathered) for name in gathered[0]}
        storage.put_scalar("total_loss", sum(losses.values()))
        storage.put_scalars(**losses)

    def state_dict(self) -> dict:
        return {"nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict) -> None:
        """Restores the count of skipped non-finite steps (0 from a checkpoint without it)."""
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))


class AMPTrainer(SimpleTrainer):
    """SimpleTrainer with automatic mixed precision: the forward pass runs under autocast.

    On CUDA in float16 a gradient scaler guards small gradients against underflow (its state is
    checkpointed); bfloat16, the CPU's autocast type, needs no scaling.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable | None,
        optimizer: torch.optim.Optimizer,
        gradient_clipper: Callable[[Iterable[Tensor]], object] | None = None,
        device_type: str = "cuda",
        dtype: torch.dtype | None = None,
        max_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__(model, data_loader, optimizer, gradient_clipper, max_nonfinite_steps)
        self.device_type = device_type
        self.dtype = dtype or (torch.float16 if device_type == "cuda" else torch.bfloat16)
        use_scaler = self.dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(device_type, enabled=use_scaler)

    def run_step(self) -> None:
        batch, data_time = self.next_batch()
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss_dict = self.model(batch)
        total = self.check_losses(loss_dict)
        if total is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(total).backward()
        if self.gradient_clipper is not None:
            self.grad_scaler.unscale_(self.optimizer)
            self.gradient_clipper(self._trainable_parameters())
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.write_metrics(loss_dict, data_time)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "grad_scaler": self.grad_scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
