"""RoI max pooling, the layer at the heart of Fast R-CNN (Girshick 2015, §2.1).

Every region of interest is cut into an ``h x w`` grid of bins on the shared
feature map and each bin is max-pooled, giving a fixed-size feature per RoI.
The kernels are detkit's own (``detkit/layers/csrc``), registered as
``torch.ops.detkit.roi_pool_forward`` / ``roi_pool_backward``; this module
adds their autograd formula and fake (meta) kernels so they work under
autograd, ``torch.compile`` and ``torch.library.opcheck``, and the
user-facing :func:`roi_pool` / :class:`ROIPool`. Semantics match
``torchvision.ops.roi_pool`` exactly; see docs/ops.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

try:
    from detkit import _C  # noqa: F401  (loading it registers torch.ops.detkit.*)
except ImportError as error:  # pragma: no cover - depends on the build
    raise ImportError(
        "detkit's compiled operators (detkit._C) are not built: run `make build` "
        "or `pip install --no-build-isolation -e .` in the repository root"
    ) from error

__all__ = ["ROIPool", "roi_pool"]


def _output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(output_size) if isinstance(output_size, Sequence) else ()
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"roi_pool: output_size must be a positive int or a pair (h, w) of positive ints, "
            f"got {output_size!r}"
        )
    return size


def _boxes_to_rois(boxes: Sequence[Tensor], input: Tensor) -> Tensor:
    """Turns one ``Tensor[Ki, 4]`` of boxes per image into ``Tensor[K, 5]`` rows."""
    if len(boxes) != input.shape[0]:
        raise ValueError(
            f"roi_pool: got {len(boxes)} box tensors for {input.shape[0]} images; "
            "pass one Tensor[Ki, 4] per image"
        )
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(
                f"roi_pool: boxes[{i}] must be a Tensor[Ki, 4], got shape {tuple(b.shape)}"
            )
    if not boxes:
        return input.new_empty((0, 5))
    batch_index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(batch_index), torch.cat(list(boxes))], dim=1)


def _pooled_memory_format(t: Tensor) -> torch.memory_format:
    """Channels-last when ``t`` is laid out so (and not also contiguous).

    The same rule as ``pooled_memory_format`` in csrc/roi_pool_checks.cpp, which
    decides the layout of the kernels' outputs.
    """
    channels_last = (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.register_fake("detkit::roi_pool_forward")
def _roi_pool_forward_fake(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    with_argmax: bool = True,
) -> tuple[Tensor, Tensor]:
    torch._check(
        input.dim() == 4, lambda: f"roi_pool: input must be a 4-D tensor, got {input.dim()}-D"
    )
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 5,
        lambda: f"roi_pool: rois must be a Tensor[K, 5], got shape {tuple(rois.shape)}",
    )
    torch._check(
        input.device == rois.device,
        lambda: (
            f"roi_pool: input and rois must be on the same device, got input on "
            f"{input.device} and rois on {rois.device}"
        ),
    )
    torch._check(
        rois.dtype == input.dtype
        or (input.dtype in (torch.float16, torch.bfloat16) and rois.dtype == torch.float32),
        lambda: (
            f"roi_pool: rois dtype must match the input dtype (float16/bfloat16 input also "
            f"takes float32 rois), got input {input.dtype} and rois {rois.dtype}"
        ),
    )
    torch._check(
        pooled_height > 0 and pooled_width > 0,
        lambda: "roi_pool: pooled_height and pooled_width must be positive",
    )
    torch._check(
        math.isfinite(spatial_scale) and spatial_scale > 0,
        lambda: "roi_pool: spatial_scale must be a positive finite number",
    )
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    memory_format = _pooled_memory_format(input)
    output = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=memory_format)
    if not with_argmax:
        return output, input.new_empty((0,), dtype=torch.int32)
    argmax = torch.empty(shape, dtype=torch.int32, device=input.device, memory_format=memory_format)
    return output, argmax


@torch.library.register_fake("detkit::roi_pool_backward")
def _roi_pool_backward_fake(
    grad: Tensor,
    rois: Tensor,
    argmax: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    return torch.empty(
        (batch_size, channels, height, width),
        dtype=grad.dtype,
        device=grad.device,
        memory_format=_pooled_memory_format(argmax),
    )


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    input, rois, spatial_scale, pooled_height, pooled_width, *with_argmax = inputs
    ctx.with_argmax = with_argmax[0] if with_argmax else True
    ctx.save_for_backward(rois, output[1])
    ctx.spatial_scale = spatial_scale
    ctx.pooled_size = (pooled_height, pooled_width)
    ctx.input_shape = input.shape


def _backward(ctx, grad_output: Tensor, _grad_argmax: Tensor) -> tuple:
    if not ctx.with_argmax:
        raise RuntimeError(
            "roi_pool_forward(..., with_argmax=False) is inference-only and cannot be "
            "differentiated; call it with with_argmax=True"
        )
    rois, argmax = ctx.saved_tensors
    grad_input = torch.ops.detkit.roi_pool_backward(
        grad_output, rois, argmax, ctx.spatial_scale, *ctx.pooled_size, *ctx.input_shape
    )
    return grad_input, None, None, None, None, None


torch.library.register_autograd("detkit::roi_pool_forward", _backward, setup_context=_setup_context)


def roi_pool(
    input: Tensor,
    rois: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Max-pools every RoI of ``input`` into an ``output_size`` grid.

    Args:
        input: feature map ``[N, C, H, W]`` (contiguous or channels-last).
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in image
            coordinates, or a list of ``N`` tensors ``[Ki, 4]`` of boxes, one
            per image.
        output_size: ``h`` for an ``h x h`` grid, or ``(h, w)``.
        spatial_scale: feature-map cells per image pixel (1/16 for a stride-16 map).

    Returns:
        ``Tensor[K, C, h, w]`` in the input's memory format.

    The argmax that backward needs is computed only when ``input`` requires a
    gradient, so inference does not pay for it.
    """
    pooled_height, pooled_width = _output_size(output_size)
    if not isinstance(rois, Tensor):
        rois = _boxes_to_rois(rois, input)
    with_argmax = torch.is_grad_enabled() and input.requires_grad
    output, _ = torch.ops.detkit.roi_pool_forward(
        input, rois, float(spatial_scale), pooled_height, pooled_width, with_argmax
    )
    return output


class ROIPool(nn.Module):
    """Module form of :func:`roi_pool`, e.g. ``ROIPool(7, 1 / 16)`` after VGG16's conv5_3."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        if not (math.isfinite(spatial_scale) and spatial_scale > 0):
            raise ValueError(
                f"ROIPool: spatial_scale must be a positive finite number, got {spatial_scale!r}"
            )
        self.output_size = _output_size(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
