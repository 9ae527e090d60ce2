"""RoIAlign on CUDA (skipped without a CUDA device): parity with torchvision and the CPU,
float16/bfloat16 against float32, the deterministic backward, gradcheck and opcheck.

What RoIAlign shares with RoIPool on CUDA (``K = 0``, autocast, errors) is tested for both
ops in ``test_roi_ops_cuda.py``.

CUDA kernels may fuse multiplies and adds and add gradients atomically in any order,
so CUDA results are compared with a tolerance of about 1e-5 (issue 10), not bitwise;
the deterministic backward is compared with itself bitwise.
"""

from __future__ import annotations

import pytest
import torch
from roi_align_cases import (
    CUDA_CASES,
    GRADCHECK_CASES,
    OPCHECK_CASES,
    AlignCase,
    build_case,
    with_options,
)
from roi_testing import (
    FLOAT_DTYPES,
    MEMORY_FORMAT_IDS,
    MEMORY_FORMATS,
    REDUCED_DTYPES,
    boxes_per_image,
    dtype_id,
    grad_through,
    random_rois,
    requires_cuda,
    to_format,
)
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

from detkit.layers import roi_align

pytestmark = requires_cuda


def close(actual: Tensor, expected: Tensor) -> None:
    """Within 1e-5 for float32 (torch's defaults, tighter, for float64)."""
    assert actual.dtype == expected.dtype
    tolerance = {} if actual.dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(actual, expected, equal_nan=True, **tolerance)


@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", CUDA_CASES)
def test_cuda_matches_torchvision_and_cpu(name, dtype, memory_format, rois_form) -> None:
    """Against torchvision's CUDA op (whose outside samples add 0 too, so NaN cases compare)
    and detkit's CPU op, forward and backward."""
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format, device="cuda")
    rois, boxes = boxes_per_image(rois, input.shape[0])
    arg = boxes if rois_form == "list" else rois
    grad = case.grad_output(dtype, device="cuda")
    args = (input, arg, case.output_size, case.spatial_scale, grad)
    output, grad_input = grad_through(with_options(roi_align, case), *args)
    assert output.is_contiguous(memory_format=memory_format)
    assert grad_input.is_contiguous(memory_format=memory_format)

    cpu_output, cpu_grad = grad_through(
        with_options(roi_align, case),
        *(input.cpu(), rois.cpu(), case.output_size, case.spatial_scale, grad.cpu()),
    )
    close(output.cpu(), cpu_output)
    close(grad_input.cpu(), cpu_grad)
    if case.torchvision_can_run or not case.finite:
        tv_output, tv_grad = grad_through(with_options(tv_roi_align, case), *args)
        close(output, tv_output)
        close(grad_input, tv_grad)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("rois_dtype", ["same", torch.float32], ids=dtype_id)
@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("aligned", [False, True])
def test_cuda_reduced_precision_is_float32_rounded(aligned, dtype, rois_dtype, memory_format):
    """float16/bfloat16 features are sampled and summed in float32: the output is the float32
    result rounded once (to within that rounding), and so is the gradient."""
    gen = torch.Generator().manual_seed(61)
    n, c, h, w = 2, 40, 14, 15
    input = to_format(torch.randn(n, c, h, w, generator=gen).to(dtype), memory_format).cuda()
    rois = random_rois(gen, n, 300, h, w, scale=0.7)
    rois = rois.to(dtype if rois_dtype == "same" else rois_dtype).cuda()
    case = AlignCase(input, rois, (7, 5), 0.7, 0, aligned)
    grad = torch.randn(300, c, 7, 5, generator=gen).to(device="cuda", dtype=dtype)
    pool = with_options(roi_align, case)
    output, grad_input = grad_through(pool, input, rois, (7, 5), 0.7, grad)
    expected, expected_grad = grad_through(
        pool, input.float(), rois.float(), (7, 5), 0.7, grad.float()
    )
    assert output.dtype == dtype and grad_input.dtype == dtype
    assert output.is_contiguous(memory_format=memory_format)
    assert grad_input.is_contiguous(memory_format=memory_format)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(output.float(), expected, rtol=eps, atol=1e-5)
    torch.testing.assert_close(grad_input.float(), expected_grad, rtol=eps, atol=1e-5)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES, *REDUCED_DTYPES], ids=dtype_id)
def test_cuda_deterministic_backward(dtype, memory_format, deterministic) -> None:
    """Under ``torch.use_deterministic_algorithms(True)``: bitwise repeatable, close to the
    atomic backward, and detkit's own kernel (torchvision falls back to Python there)."""
    gen = torch.Generator().manual_seed(67)
    n, c, h, w = 2, 16, 12, 12
    input = to_format(torch.randn(n, c, h, w, dtype=dtype), memory_format).cuda()
    rois = random_rois(gen, n, 400, h, w).to(dtype).cuda()  # overlapping: shared cells
    grad = torch.randn(400, c, 3, 3, generator=gen).exp().to(device="cuda", dtype=dtype)
    pool = with_options(roi_align, AlignCase(input, rois, (3, 3), 1.0, 2, True))

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        _, first = grad_through(pool, input, rois, 3, 1.0, grad)
    assert "detkit::roi_align_backward" in {event.key for event in profile.key_averages()}
    _, second = grad_through(pool, input, rois, 3, 1.0, grad)
    assert torch.equal(first, second)  # bitwise reproducible
    assert first.is_contiguous(memory_format=memory_format)
    torch.use_deterministic_algorithms(False)
    _, atomic = grad_through(pool, input, rois, 3, 1.0, grad)
    if dtype in REDUCED_DTYPES:
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(atomic.float(), first.float(), rtol=eps, atol=1e-3)
    else:
        close(atomic, first)
        _, cpu_grad = grad_through(pool, input.cpu(), rois.cpu(), 3, 1.0, grad.cpu())
        close(first.cpu(), cpu_grad)


@pytest.mark.parametrize("name", GRADCHECK_CASES[:3])
def test_cuda_gradcheck(name: str) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float64, device="cuda")
    pool = with_options(roi_align, case)
    assert torch.autograd.gradcheck(
        lambda x: pool(x, rois, case.output_size, case.spatial_scale), (input.requires_grad_(),)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", OPCHECK_CASES)
def test_cuda_opcheck(name: str, memory_format, dtype) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format, device="cuda")
    torch.library.opcheck(
        torch.ops.detkit.roi_align_forward.default,
        (input.requires_grad_(), rois, *case.options),
    )
    grad = case.grad_output(dtype, memory_format, device="cuda")
    torch.library.opcheck(
        torch.ops.detkit.roi_align_backward.default, (grad, rois, *case.options, *input.shape)
    )
