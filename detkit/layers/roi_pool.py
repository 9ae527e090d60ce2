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

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._roi_utils import (
    as_roi_rows,
    check_fake_backward,
    check_fake_forward,
    check_pooling,
    empty_like_layout,
    fx_leaf,
    output_size_pair,
)

__all__ = ["ROIPool", "roi_pool"]

_OP = "roi_pool"


@torch.library.register_fake("detkit::roi_pool_forward")
def _roi_pool_forward_fake(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    with_argmax: bool = True,
) -> tuple[Tensor, Tensor]:
    check_fake_forward(_OP, input, rois, spatial_scale, pooled_height, pooled_width)
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    output = empty_like_layout(shape, input)
    if not with_argmax:
        return output, input.new_empty((0,), dtype=torch.int32)
    return output, empty_like_layout(shape, input, dtype=torch.int32)


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
    check_fake_backward(_OP, grad, rois, spatial_scale, pooled_height, pooled_width)
    return empty_like_layout((batch_size, channels, height, width), argmax, dtype=grad.dtype)


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    input, rois, spatial_scale, pooled_height, pooled_width, *with_argmax = inputs
    ctx.with_argmax = with_argmax[0] if with_argmax else True
    ctx.save_for_backward(rois, output[1])
    ctx.spatial_scale = spatial_scale
    ctx.pooled_size = (pooled_height, pooled_width)
    ctx.input_shape = input.shape


def _backward(ctx, grad_output: Tensor, _grad_argmax: Tensor) -> tuple:
    if not ctx.needs_input_grad[0]:
        return (None,) * 6
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


@fx_leaf
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
    pooled_height, pooled_width = output_size_pair(_OP, output_size)
    with_argmax = torch.is_grad_enabled() and input.requires_grad
    output, _ = torch.ops.detkit.roi_pool_forward(
        input,
        as_roi_rows(_OP, rois, input),
        float(spatial_scale),
        pooled_height,
        pooled_width,
        with_argmax,
    )
    return output


class ROIPool(nn.Module):
    """Module form of :func:`roi_pool`, e.g. ``ROIPool(7, 1 / 16)`` after VGG16's conv5_3."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size_pair(_OP, output_size)
        check_pooling(_OP, spatial_scale, *self.output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
