"""RoIAlign (He et al., Mask R-CNN, 2017): RoI pooling without rounding.

Every RoI is cut into an ``h x w`` grid of bins on the feature map, each bin sampled on a
regular grid of points whose values are interpolated bilinearly, and the samples of a bin
averaged. The kernels are detkit's own (``detkit/layers/csrc``), registered as
``torch.ops.detkit.roi_align_forward`` / ``roi_align_backward``; this module adds their
autograd formula and fake (meta) kernels, and the user-facing :func:`roi_align` /
:class:`ROIAlign`. Semantics match ``torchvision.ops.roi_align``; see docs/ops.md.
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
    pooled_memory_format,
)

__all__ = ["ROIAlign", "roi_align"]

_OP = "roi_align"


@torch.library.register_fake("detkit::roi_align_forward")
def _roi_align_forward_fake(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    check_fake_forward(_OP, input, rois, spatial_scale, pooled_height, pooled_width)
    return empty_like_layout((rois.shape[0], input.shape[1], pooled_height, pooled_width), input)


@torch.library.register_fake("detkit::roi_align_backward")
def _roi_align_backward_fake(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    check_fake_backward(_OP, grad, rois, spatial_scale, pooled_height, pooled_width)
    return empty_like_layout((batch_size, channels, height, width), grad)


def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:
    input, rois, *arguments = inputs
    ctx.save_for_backward(rois)
    ctx.arguments = arguments  # spatial_scale, pooled size, sampling_ratio, aligned
    ctx.input_shape = input.shape
    ctx.memory_format = pooled_memory_format(input)


def _backward(ctx, grad_output: Tensor) -> tuple:
    if not ctx.needs_input_grad[0]:
        return (None,) * 7
    (rois,) = ctx.saved_tensors
    # The kernel lays the input gradient out like `grad`: make that the input's layout.
    grad_output = grad_output.contiguous(memory_format=ctx.memory_format)
    grad_input = torch.ops.detkit.roi_align_backward(
        grad_output, rois, *ctx.arguments, *ctx.input_shape
    )
    return (grad_input,) + (None,) * 6


torch.library.register_autograd(
    "detkit::roi_align_forward", _backward, setup_context=_setup_context
)


def _check_sampling_ratio(sampling_ratio: int) -> None:
    if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
        raise TypeError(
            f"{_OP}: sampling_ratio must be an int (samples per bin and axis, or <= 0 for "
            f"ceil(roi_size / output_size)), got {sampling_ratio!r}"
        )


@fx_leaf
def roi_align(
    input: Tensor,
    rois: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Average-pools bilinear samples of every RoI of ``input`` into an ``output_size`` grid.

    Args:
        input: feature map ``[N, C, H, W]`` (contiguous or channels-last).
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in image coordinates,
            or a list of ``N`` tensors ``[Ki, 4]`` of boxes, one per image.
        output_size: ``h`` for an ``h x h`` grid, or ``(h, w)``.
        spatial_scale: feature-map cells per image pixel (1/16 for a stride-16 map).
        sampling_ratio: samples per bin along each axis; ``<= 0`` takes
            ``ceil(roi_size / output_size)`` (adaptive).
        aligned: shift the RoI by half a cell (detectron2's ``ROIAlignV2``), so that box
            coordinates that are pixel edges map onto the feature grid exactly.

    Returns:
        ``Tensor[K, C, h, w]`` in the input's memory format.
    """
    pooled_height, pooled_width = output_size_pair(_OP, output_size)
    _check_sampling_ratio(sampling_ratio)
    return torch.ops.detkit.roi_align_forward(
        input,
        as_roi_rows(_OP, rois, input),
        float(spatial_scale),
        pooled_height,
        pooled_width,
        sampling_ratio,
        bool(aligned),
    )


class ROIAlign(nn.Module):
    """Module form of :func:`roi_align`, e.g. ``ROIAlign(7, 1 / 16, 0, aligned=True)``."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int = -1,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        _check_sampling_ratio(sampling_ratio)
        self.output_size = output_size_pair(_OP, output_size)
        check_pooling(_OP, spatial_scale, *self.output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = sampling_ratio
        self.aligned = bool(aligned)

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
