"""RoIPool on CUDA (skipped without a CUDA device): parity with torchvision and the CPU,
float16/bfloat16, the deterministic backward, gradcheck and opcheck.

What RoIPool shares with RoIAlign on CUDA (``K = 0``, autocast, errors) is tested for both
ops in ``test_roi_ops_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch
from roi_pool_cases import (
    build_case,
    detkit_forward,
    torchvision_forward,
)
from roi_testing import (
    FLOAT_DTYPES,
    MEMORY_FORMATS,
    dtype_id,
    grad_through,
    random_rois,
    requires_cuda,
    to_format,
)
from torchvision.ops import roi_pool as tv_roi_pool

from detkit.layers import roi_pool


@requires_cuda
@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "name",
    [
        "random-scale-1/16",
        "special-values",
        "large-k",
        "ties-integers",
        "float32-bins-14",
        "outside",
    ],
)
def test_cuda_matches_torchvision_and_cpu(name, dtype, memory_format, rois_form) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format, device="cuda")
    size, scale = case.output_size, case.spatial_scale
    output, argmax = detkit_forward(input, rois, scale, size)
    tv_output, tv_argmax = torchvision_forward(input, rois, scale, size)
    torch.testing.assert_close(output, tv_output, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(argmax, tv_argmax)
    assert output.is_contiguous(memory_format=memory_format)
    cpu_output, cpu_argmax = detkit_forward(input.cpu(), rois.cpu(), scale, size)
    torch.testing.assert_close(output.cpu(), cpu_output, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(argmax.cpu(), cpu_argmax)

    if rois_form == "list":
        order = rois[:, 0].argsort(stable=True)
        rois = rois[order]
        arg = [rois[rois[:, 0] == i, 1:] for i in range(input.shape[0])]
    else:
        arg = rois
    gen = torch.Generator().manual_seed(59)
    # Small integers: every sum is exact, so the atomic order cannot show.
    grad = torch.randint(-4, 5, (rois.shape[0], input.shape[1], *size), generator=gen)
    grad = grad.to(device="cuda", dtype=dtype)
    output, grad_input = grad_through(roi_pool, input, arg, size, scale, grad)
    _, tv_grad = grad_through(tv_roi_pool, input, arg, size, scale, grad)
    assert torch.equal(grad_input, tv_grad)
    assert grad_input.is_contiguous(memory_format=memory_format)


@requires_cuda
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("rois_dtype", ["same", torch.float32], ids=dtype_id)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_cuda_reduced_precision_equals_float32(dtype, rois_dtype, memory_format) -> None:
    gen = torch.Generator().manual_seed(61)
    n, c, h, w = 2, 40, 14, 15
    input = to_format(torch.randn(n, c, h, w, generator=gen).to(dtype), memory_format).cuda()
    rois = random_rois(gen, n, 300, h, w, scale=0.7)
    rois = rois.to(dtype if rois_dtype == "same" else rois_dtype).cuda()
    output, argmax = detkit_forward(input, rois, 0.7, (7, 5))
    expected, expected_argmax = detkit_forward(input.float(), rois.float(), 0.7, (7, 5))
    assert output.dtype == dtype
    assert output.is_contiguous(memory_format=memory_format)
    assert torch.equal(output, expected.to(dtype))
    assert torch.equal(argmax, expected_argmax)

    # Small-integer gradients: float32 accumulation is exact, then rounded once.
    grad = torch.randint(-3, 4, output.shape, generator=gen).to(device="cuda", dtype=dtype)
    _, grad_input = grad_through(roi_pool, input, rois, (7, 5), 0.7, grad)
    _, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (7, 5), 0.7, grad.float()
    )
    assert grad_input.dtype == dtype
    assert grad_input.is_contiguous(memory_format=memory_format)
    assert torch.equal(grad_input, expected_grad.to(dtype))

    # Random gradients: within the rounding of one float16/bfloat16 conversion.
    grad = torch.randn(output.shape, generator=gen).to(device="cuda", dtype=dtype)
    _, grad_input = grad_through(roi_pool, input, rois, (7, 5), 0.7, grad)
    _, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (7, 5), 0.7, grad.float()
    )
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(grad_input.float(), expected_grad, rtol=eps, atol=1e-5)


@requires_cuda
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_cuda_deterministic_backward(dtype, memory_format, deterministic) -> None:
    gen = torch.Generator().manual_seed(67)
    n, c, h, w = 2, 16, 12, 12
    input = to_format(torch.zeros(n, c, h, w, dtype=dtype), memory_format).cuda()  # ties
    rois = random_rois(gen, n, 400, h, w).to(dtype).cuda()
    grad = torch.randn(400, c, 3, 3, generator=gen, dtype=dtype).exp().cuda()

    _, first = grad_through(roi_pool, input, rois, 3, 1.0, grad)
    _, second = grad_through(roi_pool, input, rois, 3, 1.0, grad)
    assert torch.equal(first, second)  # bitwise reproducible
    assert first.is_contiguous(memory_format=memory_format)
    # The deterministic sums are fixed-point (exact up to ~1e-13 of the largest gradient
    # here), so they round to within one ulp of the exact sum; the CPU adds in float64 here.
    _, exact = grad_through(
        roi_pool, input.cpu().double(), rois.cpu().double(), 3, 1.0, grad.cpu().double()
    )
    torch.testing.assert_close(first.cpu().double(), exact, rtol=torch.finfo(dtype).eps, atol=1e-9)
    torch.use_deterministic_algorithms(False)
    _, atomic = grad_through(roi_pool, input, rois, 3, 1.0, grad)
    torch.testing.assert_close(atomic, first)


@requires_cuda
def test_cuda_gradcheck_and_opcheck() -> None:
    gen = torch.Generator().manual_seed(71)
    input = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    rois = random_rois(gen, 2, 5, 6, 7, spread=0.1).double().cuda()
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, rois, (2, 3), 1.0), (input,))
    for memory_format in MEMORY_FORMATS:
        x = to_format(input.detach().float(), memory_format).requires_grad_()
        torch.library.opcheck(
            torch.ops.detkit.roi_pool_forward.default, (x, rois.float(), 1.0, 2, 3)
        )
        output, argmax = detkit_forward(x.detach(), rois.float(), 1.0, (2, 3))
        torch.library.opcheck(
            torch.ops.detkit.roi_pool_backward.default,
            (torch.ones_like(output), rois.float(), argmax, 1.0, 2, 3, 2, 2, 6, 7),
        )
