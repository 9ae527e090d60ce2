"""Tests of RoIPool's own API around the values: gradcheck, opcheck and a CPU autocast case.

What RoIPool shares with RoIAlign (torch.compile, torch.fx, ``K = 0``, the module, the
argument errors, the autocast rule) is tested for both ops in ``test_roi_ops.py``.
"""

from __future__ import annotations

import pytest
import torch
from roi_pool_cases import detkit_forward
from roi_testing import (
    MEMORY_FORMATS,
    random_rois,
    rois_from,
    to_format,
)

from detkit.layers import ROIPool, roi_pool

# ------------------------------------------------------------- autograd, opcheck


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_gradcheck(memory_format) -> None:
    gen = torch.Generator().manual_seed(23)
    input = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)  # no ties
    input = to_format(input, memory_format).requires_grad_()
    rois = random_rois(gen, 2, 5, 6, 7, spread=0.1).double()
    rois = torch.cat([rois, rois_from([[1, 1, 1, 6, 5], [0, 2, 2, 2, 2]])])
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, rois, (2, 3), 1.0), (input,))
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert torch.autograd.gradcheck(lambda x: ROIPool(2, 1.0)(x, boxes), (input,))


@pytest.mark.parametrize("with_argmax", [True, False])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_opcheck_forward(memory_format, with_argmax: bool) -> None:
    gen = torch.Generator().manual_seed(29)
    input = to_format(torch.randn(2, 3, 5, 6, generator=gen), memory_format)
    input.requires_grad_(with_argmax)
    rois = random_rois(gen, 2, 4, 5, 6).float()
    torch.library.opcheck(
        torch.ops.detkit.roi_pool_forward.default, (input, rois, 0.5, 2, 3, with_argmax)
    )


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_opcheck_backward(memory_format) -> None:
    gen = torch.Generator().manual_seed(31)
    input = to_format(torch.randn(2, 3, 5, 6, generator=gen), memory_format)
    rois = random_rois(gen, 2, 4, 5, 6).float()
    output, argmax = detkit_forward(input, rois, 1.0, (2, 3))
    grad = torch.randn(output.shape, generator=gen).contiguous(memory_format=memory_format)
    torch.library.opcheck(
        torch.ops.detkit.roi_pool_backward.default,
        (grad, rois, argmax, 1.0, 2, 3, 2, 3, 5, 6),
    )


# ------------------------------------------------------------------------ autocast


def test_autocast_cpu_leaves_float32_alone() -> None:
    gen = torch.Generator().manual_seed(53)
    input = torch.randn(1, 2, 7, 7, generator=gen)
    rois = random_rois(gen, 1, 5, 7, 7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_pool(input, rois, 3)
    assert output.dtype == torch.float32
    assert torch.equal(output, roi_pool(input, rois, 3))
