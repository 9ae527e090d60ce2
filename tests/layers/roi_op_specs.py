"""The two RoI ops as data, for the tests that hold for both (``test_roi_ops.py``,
``test_roi_ops_cuda.py``).

A spec is one op with one set of its options: how to call the function, build the
module, run the raw forward and backward ops and call the torchvision twin. RoIAlign
appears with more than one set of options, because the tests of both ops call it so.
Kept apart from ``roi_testing.py``, which must not import detkit (``roi_align_cases.py``
and the reference tests use it without detkit's op).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
import torchvision.ops
from torch import Tensor, nn

from detkit.layers import ROIAlign, ROIPool, roi_align, roi_pool


@dataclass(frozen=True)
class RoIOp:
    id: str  # the test id: the op's name, then its options when they are not the defaults
    name: str  # the op's name, as in its error messages and its fx node
    function: Callable[..., Tensor]  # detkit.layers.roi_pool / roi_align
    module_type: type[nn.Module]  # ROIPool / ROIAlign
    torchvision: Callable[..., Tensor]  # torchvision.ops.roi_pool / roi_align
    forward_op: Any  # torch.ops.detkit.<name>_forward
    backward_op: Any  # torch.ops.detkit.<name>_backward
    # Arguments after ``spatial_scale``: (sampling_ratio, aligned) for roi_align.
    options: tuple = ()
    # Whether the backward op takes the forward's argmax (max pooling) after the RoIs.
    takes_argmax: bool = False
    # Whether float16/bfloat16 results are the float32 ones rounded, bit for bit, even on
    # CUDA: max pooling copies input values, and small-integer gradients sum exactly in
    # any order. RoIAlign interpolates: its results are within one rounding of float32.
    exact: bool = False

    def __call__(
        self, input: Tensor, rois, output_size: int | Sequence[int], spatial_scale: float = 1.0
    ) -> Tensor:
        """The function with this spec's options (a ``pool`` for ``grad_through``)."""
        return self.function(input, rois, output_size, spatial_scale, *self.options)

    def module(self, output_size: int | Sequence[int], spatial_scale: float) -> nn.Module:
        return self.module_type(output_size, spatial_scale, *self.options)

    def twin(self, input: Tensor, rois, output_size, spatial_scale: float = 1.0) -> Tensor:
        """torchvision's op with this spec's options."""
        return self.torchvision(input, rois, output_size, spatial_scale, *self.options)

    def raw_forward(
        self, input: Tensor, rois: Tensor, spatial_scale: float, output_size: tuple[int, int]
    ) -> tuple[Tensor, ...]:
        """Every output of the raw forward op: ``(output, argmax)`` for roi_pool (it computes
        the argmax by default), ``(output,)`` for roi_align."""
        outputs = self.forward_op(input, rois, spatial_scale, *output_size, *self.options)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    def raw_backward(
        self,
        grad: Tensor,
        rois: Tensor,
        spatial_scale: float,
        output_size: tuple[int, int],
        input_shape: Sequence[int],
    ) -> Tensor:
        """The raw backward op; roi_pool is given an argmax of zeros (cell 0 of each image)."""
        argmax = (torch.zeros_like(grad, dtype=torch.int32),) if self.takes_argmax else ()
        return self.backward_op(
            grad, rois, *argmax, spatial_scale, *output_size, *self.options, *input_shape
        )

    def upstream_grad(self, gen: torch.Generator, shape: Sequence[int]) -> Tensor:
        """A random upstream gradient: small integers where the op is ``exact`` (so that every
        sum of them is exact too), normal values otherwise."""
        if self.exact:
            return torch.randint(-3, 4, tuple(shape), generator=gen)
        return torch.randn(tuple(shape), generator=gen)


ROI_POOL = RoIOp(
    id="roi_pool",
    name="roi_pool",
    function=roi_pool,
    module_type=ROIPool,
    torchvision=torchvision.ops.roi_pool,
    forward_op=torch.ops.detkit.roi_pool_forward,
    backward_op=torch.ops.detkit.roi_pool_backward,
    takes_argmax=True,
    exact=True,
)
# RoIAlign with its defaults (sampling_ratio=-1, aligned=False), spelled out.
ROI_ALIGN = RoIOp(
    id="roi_align",
    name="roi_align",
    function=roi_align,
    module_type=ROIAlign,
    torchvision=torchvision.ops.roi_align,
    forward_op=torch.ops.detkit.roi_align_forward,
    backward_op=torch.ops.detkit.roi_align_backward,
    options=(-1, False),
)
# A fixed grid of 2 x 2 samples per bin, aligned.
ROI_ALIGN_SR2 = replace(ROI_ALIGN, id="roi_align/sr=2/aligned", options=(2, True))
# detectron2's ROIAlignV2: an adaptive sampling grid, aligned.
ROI_ALIGN_V2 = replace(ROI_ALIGN, id="roi_align/sr=0/aligned", options=(0, True))


def over_ops(*ops: RoIOp):
    """``@pytest.mark.parametrize("op", ops)``, each named by its spec's id."""
    return pytest.mark.parametrize("op", ops, ids=[op.id for op in ops])
