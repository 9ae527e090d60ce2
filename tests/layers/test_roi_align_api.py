"""Tests of RoIAlign's own API around the values: gradcheck and opcheck (fed by the case
table), the module's and the function's ``sampling_ratio`` and ``aligned``, and CPU autocast
of channels-last features.

What RoIAlign shares with RoIPool (torch.compile, torch.fx, ``K = 0``, the module, the
argument errors, the autocast rule) is tested for both ops in ``test_roi_ops.py``.
"""

from __future__ import annotations

import pytest
import torch
from roi_align_cases import (
    GRADCHECK_CASES,
    OPCHECK_CASES,
    build_case,
    with_options,
)
from roi_testing import (
    ERRORS,
    MEMORY_FORMAT_IDS,
    MEMORY_FORMATS,
    boxes_per_image,
    input_and_rois,
    random_rois,
    to_format,
)

from detkit.layers import ROIAlign, roi_align

# ----------------------------------------------------- gradcheck, opcheck (the table)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", GRADCHECK_CASES)
def test_gradcheck(name: str, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float64, memory_format)
    input.requires_grad_()
    pool = with_options(roi_align, case)
    # Fast mode (random projections of the Jacobian): the exact gradient values are the
    # business of the reference tests; this checks the autograd wiring, in seconds.
    assert torch.autograd.gradcheck(
        lambda x: pool(x, rois, case.output_size, case.spatial_scale), (input,), fast_mode=True
    )


def test_gradcheck_list_form_through_the_module() -> None:
    case = build_case("outside/sr=2/aligned")  # small enough for the full Jacobian
    input, rois = case.cast(torch.float64)
    _, boxes = boxes_per_image(rois, input.shape[0])
    module = ROIAlign(case.output_size, case.spatial_scale, case.sampling_ratio, case.aligned)
    assert torch.autograd.gradcheck(lambda x: module(x, boxes), (input.requires_grad_(),))


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", OPCHECK_CASES)
def test_opcheck_forward(name: str, memory_format, requires_grad: bool) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float32, memory_format)
    input.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.detkit.roi_align_forward.default, (input, rois, *case.options))


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", OPCHECK_CASES)
def test_opcheck_backward(name: str, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float32, memory_format)
    grad = case.grad_output(torch.float32, memory_format)
    torch.library.opcheck(
        torch.ops.detkit.roi_align_backward.default,
        (grad, rois, *case.options, *input.shape),
    )


def test_opcheck_without_rois() -> None:
    input = torch.randn(2, 3, 5, 6, requires_grad=True)
    rois = torch.empty(0, 5)
    torch.library.opcheck(
        torch.ops.detkit.roi_align_forward.default, (input, rois, 1.0, 2, 2, 0, True)
    )
    torch.library.opcheck(
        torch.ops.detkit.roi_align_backward.default,
        (torch.empty(0, 3, 2, 2), rois, 1.0, 2, 2, 0, True, 2, 3, 5, 6),
    )


# ----------------------------------------------------------------------- the module


def test_module_shows_and_applies_sampling_ratio_and_aligned() -> None:
    pool = ROIAlign(7, 1 / 16, 2, True)
    text = repr(pool)
    for part in ("sampling_ratio=2", "aligned=True"):
        assert part in text
    assert "sampling_ratio=-1" in repr(ROIAlign((3, 5), 0.5))
    assert "aligned=False" in repr(ROIAlign((3, 5), 0.5))

    gen = torch.Generator().manual_seed(43)
    input = torch.randn(2, 3, 10, 10, generator=gen)
    rois = random_rois(gen, 2, 9, 10, 10, scale=1 / 16).float()
    assert not torch.equal(ROIAlign(7, 1 / 16, 2, False)(input, rois), pool(input, rois))


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("sampling_ratio", [2.0, 1.5, "2", None])
def test_sampling_ratio_must_be_an_int(sampling_ratio) -> None:
    input, rois = input_and_rois()
    with pytest.raises((*ERRORS, TypeError), match="sampling_ratio"):
        roi_align(input, rois, 2, 1.0, sampling_ratio)
    with pytest.raises((*ERRORS, TypeError), match="sampling_ratio"):
        ROIAlign(2, 1.0, sampling_ratio)


# ------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
def test_autocast_cpu_keeps_channels_last(memory_format) -> None:
    gen = torch.Generator().manual_seed(53)
    input = to_format(torch.randn(1, 4, 7, 7, generator=gen).bfloat16(), memory_format)
    rois = random_rois(gen, 1, 5, 7, 7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_align(input, rois, 3, 1.0, 2, False)
    assert output.dtype == torch.bfloat16
    assert output.is_contiguous(memory_format=memory_format)
