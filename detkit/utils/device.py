"""Which device a model runs on: ``MODEL.DEVICE`` resolved, with a word in the log when the
choice was automatic or a GPU stands idle."""

from __future__ import annotations

import functools
import logging
import re

import torch

logger = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_problem(name: str) -> str | None:
    """Why ``MODEL.DEVICE`` = ``name`` cannot be used here, or ``None``."""
    if not DEVICE_PATTERN.match(name):
        return f"MODEL.DEVICE must be auto, cpu, cuda or cuda:N, got {name!r}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return f"MODEL.DEVICE={name} but this machine has no CUDA device; use auto or cpu"
    return None


def chosen_device(name: str) -> str:
    """The device ``MODEL.DEVICE`` = ``name`` stands for, without a word in the log: ``auto``
    is ``cuda`` when a CUDA device is available, else ``cpu``; anything else as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def resolve_device(name: str) -> str:
    """:func:`chosen_device`, said once in the log (per process) for ``auto``; ``cpu`` with a
    GPU present: used, with one warning."""
    if name == "auto":
        chosen = chosen_device(name)
        _say_once(f"MODEL.DEVICE=auto: running on {_describe(chosen)}", logging.INFO)
        return chosen
    if name == "cpu" and torch.cuda.is_available():
        _say_once(
            f"MODEL.DEVICE=cpu although {_describe('cuda')} is available (auto would use it)",
            logging.WARNING,
        )
    return name


def _describe(device: str) -> str:
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu (no CUDA device found)" if not torch.cuda.is_available() else "cpu"


@functools.cache
def _say_once(message: str, level: int) -> None:
    logger.log(level, message)
