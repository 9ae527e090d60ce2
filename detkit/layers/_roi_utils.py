"""What every RoI op's Python side shares: loading the kernels, argument forms, the fake
kernels' checks and layout rule, and staying one call under ``torch.fx`` tracing.

The checks here are the Python twins of ``csrc/roi_checks.cpp``: the fake (meta) kernels need
them, since no C++ runs for fake tensors, and the modules use them to refuse bad arguments
when they are built. Messages match the C++ ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

try:
    from detkit import _C  # noqa: F401  (loading it registers torch.ops.detkit.*)
except ImportError as error:  # pragma: no cover - depends on the build
    raise ImportError(
        "detkit's compiled operators (detkit._C) are not built: run `make build` "
        "or `pip install --no-build-isolation -e .` in the repository root"
    ) from error

F = TypeVar("F", bound=Callable[..., Any])

_REDUCED = (torch.float16, torch.bfloat16)


def output_size_pair(op: str, output_size: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` from ``h`` or ``(h, w)``; both positive ints."""
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(output_size) if isinstance(output_size, Sequence) else ()
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"{op}: output_size must be a positive int or a pair (h, w) of positive ints, "
            f"got {output_size!r}"
        )
    return size


def boxes_to_rois(op: str, boxes: Sequence[Tensor]) -> Tensor:
    """One ``Tensor[Ki, 4]`` of boxes per image as ``Tensor[K, 5]`` rows
    ``(image index, x1, y1, x2, y2)``, in the order of the concatenated lists."""
    for i, image_boxes in enumerate(boxes):
        if (
            not isinstance(image_boxes, Tensor)
            or image_boxes.dim() != 2
            or image_boxes.shape[1] != 4
        ):
            shape = (
                tuple(image_boxes.shape)
                if isinstance(image_boxes, Tensor)
                else type(image_boxes).__name__
            )
            raise ValueError(f"{op}: boxes[{i}] must be a Tensor[Ki, 4], got {shape}")
    if not boxes:
        return torch.zeros((0, 5))
    # Filled in place rather than concatenated: torch.cat under autocast refuses some dtype
    # mixes (float16 boxes inside a bfloat16 region), which the ops themselves accept.
    rows = boxes[0].new_empty((sum(b.shape[0] for b in boxes), 5))
    start = 0
    for i, image_boxes in enumerate(boxes):
        rows[start : start + image_boxes.shape[0], 0] = i
        rows[start : start + image_boxes.shape[0], 1:] = image_boxes
        start += image_boxes.shape[0]
    return rows


def as_roi_rows(op: str, rois: Tensor | Sequence[Tensor], input: Tensor) -> Tensor:
    """``rois`` as ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``: a tensor is taken as
    it is; a list of one ``Tensor[Ki, 4]`` of boxes per image gets the images' indices."""
    if isinstance(rois, Tensor):
        return rois
    if len(rois) != input.shape[0]:
        raise ValueError(
            f"{op}: got {len(rois)} box tensors for {input.shape[0]} images; "
            "pass one Tensor[Ki, 4] per image"
        )
    return boxes_to_rois(op, rois) if rois else input.new_empty((0, 5))


def pooled_memory_format(t: Tensor) -> torch.memory_format:
    """Channels-last when ``t`` is laid out so (and not also contiguous): the rule by which the
    kernels (``pooled_memory_format`` in csrc/roi_checks.cpp) lay out their outputs."""
    channels_last = (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.channels_last if channels_last else torch.contiguous_format


def _check_rois(op: str, rois: Tensor, features: Tensor, name: str) -> None:
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 5,
        lambda: (
            f"{op}: rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) rows, "
            f"got shape {tuple(rois.shape)}"
        ),
    )
    torch._check(
        features.device == rois.device,
        lambda: (
            f"{op}: {name} and rois must be on the same device, got {name} on "
            f"{features.device} and rois on {rois.device}"
        ),
    )
    torch._check(
        rois.dtype == features.dtype
        or (features.dtype in _REDUCED and rois.dtype == torch.float32),
        lambda: (
            f"{op}: rois dtype must match the {name} dtype (float16/bfloat16 {name} also take "
            f"float32 rois), got {name} {features.dtype} and rois {rois.dtype}"
        ),
    )


def check_pooling(op: str, spatial_scale: float, pooled_height: int, pooled_width: int) -> None:
    """Positive pooled size and a positive finite scale (ValueError otherwise)."""
    torch._check_value(
        pooled_height > 0 and pooled_width > 0,
        lambda: (
            f"{op}: pooled_height and pooled_width must be positive, got "
            f"({pooled_height}, {pooled_width})"
        ),
    )
    torch._check_value(
        math.isfinite(spatial_scale) and spatial_scale > 0,
        lambda: f"{op}: spatial_scale must be a positive finite number, got {spatial_scale!r}",
    )


def check_fake_forward(
    op: str,
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
) -> None:
    """The checks of ``check_forward_args`` in csrc/roi_checks.cpp, for fake tensors."""
    torch._check(input.dim() == 4, lambda: f"{op}: input must be a 4-D tensor, got {input.dim()}-D")
    torch._check(
        input.dtype.is_floating_point,
        lambda: f"{op}: input must have a floating-point dtype, got {input.dtype}",
    )
    _check_rois(op, rois, input, "input")
    check_pooling(op, spatial_scale, pooled_height, pooled_width)


def check_fake_backward(
    op: str, grad: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int
) -> None:
    """The checks of ``check_backward_args`` in csrc/roi_checks.cpp, for fake tensors."""
    _check_rois(op, rois, grad, "grad")
    check_pooling(op, spatial_scale, pooled_height, pooled_width)


def empty_like_layout(
    shape: Sequence[int | torch.SymInt], like: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """An empty tensor of ``shape`` on ``like``'s device, in ``like``'s dtype (or ``dtype``), laid
    out by the kernels' rule applied to ``like``."""
    return torch.empty(
        tuple(shape),
        dtype=dtype or like.dtype,
        device=like.device,
        memory_format=pooled_memory_format(like),
    )


def _find_proxy(values: Sequence[Any]) -> torch.fx.Proxy | None:
    for value in values:
        if isinstance(value, torch.fx.Proxy):
            return value
        if isinstance(value, (list, tuple)):
            found = _find_proxy(value)
            if found is not None:
                return found
    return None


def fx_leaf(fn: F) -> F:
    """Makes ``fn`` one ``call_function`` node when ``torch.fx.symbolic_trace`` traces a caller,
    however the caller reaches it (``torch.fx.wrap`` covers only calls through the defining
    module's globals). Outside tracing it is ``fn`` itself."""

    @functools.wraps(fn)
    def leaf(*args: Any, **kwargs: Any) -> Any:
        proxy = _find_proxy([*args, *kwargs.values()])
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)

    return leaf  # type: ignore[return-value]
