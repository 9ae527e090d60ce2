"""Building the optimizer (the paper's SGD with per-parameter lr and decay) and its schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .lr_scheduler import (
    FittedSchedule,
    LRMultiplier,
    fit_schedule_to_run,
    warmup_multistep_schedule,
)

logger = logging.getLogger(__name__)

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def get_optimizer_params(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
) -> list[dict]:
    """One parameter group per trainable parameter, with its own lr and weight decay.

    Biases (of any layer) train at ``base_lr * bias_lr_factor`` with ``weight_decay_bias`` (the
    paper: lr x2, no decay); normalisation layers' weights use ``weight_decay_norm``. Frozen
    parameters are left out and parameters shared between modules appear once.
    """
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    groups, seen = [], set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or parameter in seen:
                continue
            seen.add(parameter)
            lr, decay = base_lr, weight_decay
            if isinstance(module, _NORM_LAYERS):
                decay = weight_decay_norm
            if name == "bias":  # normalisation layers' biases included, as in detectron2
                lr, decay = base_lr * bias_lr_factor, weight_decay_bias
            groups.append({"params": [parameter], "lr": lr, "weight_decay": decay})
    return groups


def reduce_param_groups(groups: Iterable[dict]) -> list[dict]:
    """The same parameters with the same settings, in as few groups as possible.

    Groups whose settings (every key but ``params``: lr, weight decay, …) are equal become one
    group; the groups come in the order their settings first appear and keep their parameters'
    order, so the layout (which optimizer checkpoints index) depends only on the input order.
    An optimizer steps each parameter by its own group's settings, so merging changes no update;
    it makes the optimizer's step run over a few long lists instead of one per parameter.
    Setting values must be hashable (numbers, strings, tuples).
    """
    merged: dict[tuple, dict] = {}
    seen: set[int] = set()
    for group in groups:
        settings = tuple(sorted((key, value) for key, value in group.items() if key != "params"))
        target = merged.setdefault(settings, {**dict(settings), "params": []})
        for parameter in group["params"]:
            if id(parameter) in seen:
                raise ValueError("reduce_param_groups: a parameter is in more than one group")
            seen.add(id(parameter))
            target["params"].append(parameter)
    return list(merged.values())


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum over :func:`get_optimizer_params` from the ``SOLVER`` keys, with
    parameters of equal settings in one group (:func:`reduce_param_groups`)."""
    solver = cfg.SOLVER
    groups = get_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
    )
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return torch.optim.SGD(reduce_param_groups(groups), lr=solver.BASE_LR, momentum=solver.MOMENTUM)


def fitted_schedule(cfg) -> FittedSchedule:
    """The ``SOLVER`` schedule keys (steps, warm-up, log period) fitted to ``SOLVER.MAX_ITER``
    (:func:`fit_schedule_to_run`); :func:`build_lr_scheduler` warns about what it changes."""
    solver = cfg.SOLVER
    return fit_schedule_to_run(
        solver.MAX_ITER, solver.STEPS, solver.WARMUP_ITERS, solver.LOG_PERIOD
    )


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Linear warmup then steps by ``SOLVER.GAMMA`` at ``SOLVER.STEPS``, stepped per iteration;
    logs one warning naming every schedule key :func:`fitted_schedule` changes."""
    solver = cfg.SOLVER
    fitted = fitted_schedule(cfg)
    if fitted.changes:
        logger.warning("The schedule is fitted to the run: " + "; ".join(fitted.changes))
    schedule = warmup_multistep_schedule(
        solver.MAX_ITER, fitted.steps, solver.GAMMA, fitted.warmup_iters, solver.WARMUP_FACTOR
    )
    return LRMultiplier(optimizer, schedule, solver.MAX_ITER)


def build_gradient_clipper(cfg) -> Callable[[Iterable[torch.Tensor]], None] | None:
    """A function that clips gradients in place per ``SOLVER.CLIP_GRADIENTS``, or None."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    if clip.CLIP_TYPE == "value":
        return lambda params: nn.utils.clip_grad_value_(params, clip.CLIP_VALUE)
    if clip.CLIP_TYPE == "norm":
        return lambda params: nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, clip.NORM_TYPE)
    raise ValueError(
        f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value' or 'norm', got {clip.CLIP_TYPE!r}"
    )
