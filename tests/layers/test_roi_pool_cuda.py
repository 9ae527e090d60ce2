"""RoIPool on CUDA (skipped without a CUDA device): parity with torchvision and the CPU,
float16/bfloat16, the deterministic backward, autocast and errors.
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
    AUTOCAST_DTYPES,
    ERRORS,
    FLOAT_DTYPES,
    MEMORY_FORMATS,
    REDUCED_DTYPES,
    dtype_id,
    grad_through,
    input_and_rois,
    random_rois,
    requires_cuda,
    to_format,
)
from torch import nn
from torchvision.ops import roi_pool as tv_roi_pool

from detkit.layers import roi_pool


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_autocast_cuda_pools_conv_features_with_float32_rois(dtype: torch.dtype) -> None:
    """Under CUDA autocast a conv yields reduced-precision features; float32 RoIs pool them."""
    gen = torch.Generator().manual_seed(59)
    conv = nn.Conv2d(3, 4, 3, padding=1).cuda()
    images = torch.randn(2, 3, 12, 10, generator=gen).cuda()
    rois = random_rois(gen, 2, 9, 12, 10, scale=0.5).float().cuda()
    with torch.autocast("cuda", dtype=dtype):
        features = conv(images)
        output = roi_pool(features, rois, (3, 2), 0.5)
    assert features.dtype == dtype and output.dtype == dtype
    expected = roi_pool(features.detach().float(), rois, (3, 2), 0.5).to(dtype)
    assert torch.equal(output, expected)
    output.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


@requires_cuda
@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=dtype_id)
def test_autocast_cuda_pools_any_mix_of_feature_and_roi_dtypes(
    dtype: torch.dtype, rois_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    """Any mix of float32/float16/bfloat16 features and RoIs under CUDA autocast: RoIs are
    widened to float32, output and gradient keep the features' dtype. Max pooling copies
    values and small-integer gradients sum exactly, so all equals the float32 result cast."""
    gen = torch.Generator().manual_seed(89)
    input = torch.randn(2, 5, 12, 10, generator=gen).to(device="cuda", dtype=dtype)
    rois = random_rois(gen, 2, 30, 12, 10, scale=0.5).to(device="cuda", dtype=rois_dtype)
    grad = torch.randint(-3, 4, (30, 5, 3, 2), generator=gen).to(device="cuda", dtype=dtype)
    expected, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (3, 2), 0.5, grad.float()
    )
    leaf = input.clone().requires_grad_()
    with torch.autocast("cuda", dtype=autocast_dtype):
        output = roi_pool(leaf, rois, (3, 2), 0.5)
    assert output.dtype == dtype
    assert torch.equal(output, expected.to(dtype))
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert torch.equal(leaf.grad, expected_grad.to(dtype))


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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=dtype_id)
def test_cuda_no_rois(dtype: torch.dtype) -> None:
    input = torch.randn(2, 3, 5, 6, device="cuda", dtype=dtype).requires_grad_()
    output = roi_pool(input, torch.empty(0, 5, device="cuda", dtype=dtype), (3, 4))
    assert output.shape == (0, 3, 3, 4) and output.dtype == dtype
    output.sum().backward()
    assert torch.equal(input.grad, torch.zeros_like(input))


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


CUDA_ERRORS = {
    # name: (input device, rois device, input dtype, rois dtype, rois columns, scale, message)
    "input-on-cuda": ("cuda", "cpu", torch.float32, torch.float32, 5, 1.0, r"(?i)device"),
    "rois-on-cuda": ("cpu", "cuda", torch.float32, torch.float32, 5, 1.0, r"(?i)device"),
    "half-double": ("cuda", "cuda", torch.float16, torch.float64, 5, 1.0, r"(?i)dtype"),
    "bfloat16-half": ("cuda", "cuda", torch.bfloat16, torch.float16, 5, 1.0, r"(?i)dtype"),
    "float-half": ("cuda", "cuda", torch.float32, torch.float16, 5, 1.0, r"(?i)dtype"),
    "double-float": ("cuda", "cuda", torch.float64, torch.float32, 5, 1.0, r"(?i)dtype"),
    "rois-k-by-4": ("cuda", "cuda", torch.float32, torch.float32, 4, 1.0, r"\[K, 5\]"),
    "zero-scale": ("cuda", "cuda", torch.float32, torch.float32, 5, 0.0, "spatial_scale"),
}


@requires_cuda
@pytest.mark.parametrize("name", list(CUDA_ERRORS))
def test_cuda_errors(name: str) -> None:
    # A batch index out of range is a device-side assert on CUDA, which poisons the
    # CUDA context: not tested in-process.
    input_device, rois_device, input_dtype, rois_dtype, columns, scale, message = CUDA_ERRORS[name]
    input, rois = input_and_rois()
    input = input.to(device=input_device, dtype=input_dtype)
    rois = rois[:, :columns].to(device=rois_device, dtype=rois_dtype)
    with pytest.raises(ERRORS, match=message):
        detkit_forward(input, rois, scale, (2, 2))
