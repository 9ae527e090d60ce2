"""What RoIPool and RoIAlign share on CUDA (skipped without a CUDA device), tested once for
both ops (the specs of ``roi_op_specs.py``): ``K = 0``, the autocast rule and the errors.

Where the ops differ is in how close float16/bfloat16 results come to float32 ones:
max pooling copies values, so they are the float32 results rounded bit for bit; RoIAlign
interpolates, within one rounding of them (``RoIOp.exact``).
"""

from __future__ import annotations

import pytest
import torch
from roi_op_specs import ROI_ALIGN_SR2, ROI_ALIGN_V2, ROI_POOL, RoIOp, over_ops
from roi_testing import (
    AUTOCAST_DTYPES,
    ERRORS,
    REDUCED_DTYPES,
    dtype_id,
    grad_through,
    input_and_rois,
    random_rois,
    requires_cuda,
)
from torch import Tensor, nn

pytestmark = requires_cuda


def assert_float32_rounded(op: RoIOp, actual: Tensor, expected: Tensor) -> None:
    """``actual`` is the float32 ``expected`` rounded to ``actual``'s dtype: exactly where the
    op is exact, else within that rounding."""
    if op.exact:
        assert torch.equal(actual, expected.to(actual.dtype))
    else:
        eps = torch.finfo(actual.dtype).eps
        torch.testing.assert_close(actual.float(), expected, rtol=eps, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, *REDUCED_DTYPES], ids=dtype_id)
@over_ops(ROI_POOL, ROI_ALIGN_V2)
def test_cuda_no_rois_give_empty_outputs_and_zero_gradients(op: RoIOp, dtype: torch.dtype):
    input = torch.randn(2, 3, 5, 6, device="cuda", dtype=dtype).requires_grad_()
    output = op(input, torch.empty(0, 5, device="cuda", dtype=dtype), (3, 4))
    assert output.shape == (0, 3, 3, 4) and output.dtype == dtype
    output.sum().backward()
    assert torch.equal(input.grad, torch.zeros_like(input))


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=dtype_id)
@over_ops(ROI_POOL, ROI_ALIGN_V2)
def test_autocast_cuda_pools_any_mix_of_feature_and_roi_dtypes(
    op: RoIOp, dtype: torch.dtype, rois_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    """Any mix of float32/float16/bfloat16 features and RoIs under CUDA autocast: RoIs are
    widened to float32, output and gradient keep the features' dtype and are the float32
    results rounded to it (bit for bit for max pooling, with small-integer gradients)."""
    gen = torch.Generator().manual_seed(89)
    input = torch.randn(2, 5, 12, 10, generator=gen).to(device="cuda", dtype=dtype)
    rois = random_rois(gen, 2, 30, 12, 10, scale=0.5).to(device="cuda", dtype=rois_dtype)
    grad = op.upstream_grad(gen, (30, 5, 3, 2)).to(device="cuda", dtype=dtype)
    expected, expected_grad = grad_through(
        op, input.float(), rois.float(), (3, 2), 0.5, grad.float()
    )
    leaf = input.clone().requires_grad_()
    with torch.autocast("cuda", dtype=autocast_dtype):
        output = op(leaf, rois, (3, 2), 0.5)
    assert output.dtype == dtype
    assert_float32_rounded(op, output, expected)
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert_float32_rounded(op, leaf.grad, expected_grad)


@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=dtype_id)
@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_autocast_cuda_pools_conv_features_with_float32_rois(op: RoIOp, dtype: torch.dtype):
    """Under CUDA autocast a conv yields reduced-precision features; float32 RoIs pool them."""
    gen = torch.Generator().manual_seed(59)
    conv = nn.Conv2d(3, 4, 3, padding=1).cuda()
    images = torch.randn(2, 3, 12, 10, generator=gen).cuda()
    rois = random_rois(gen, 2, 9, 12, 10, scale=0.5).float().cuda()
    with torch.autocast("cuda", dtype=dtype):
        features = conv(images)
        output = op(features, rois, (3, 2), 0.5)
    assert features.dtype == dtype and output.dtype == dtype
    expected = op(features.detach().float(), rois, (3, 2), 0.5)
    assert_float32_rounded(op, output, expected)
    output.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


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


@pytest.mark.parametrize("name", list(CUDA_ERRORS))
@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_cuda_errors(op: RoIOp, name: str) -> None:
    # A batch index out of range is a device-side assert on CUDA, which poisons the
    # CUDA context: not tested in-process.
    input_device, rois_device, input_dtype, rois_dtype, columns, scale, message = CUDA_ERRORS[name]
    input, rois = input_and_rois()
    input = input.to(device=input_device, dtype=input_dtype)
    rois = rois[:, :columns].to(device=rois_device, dtype=rois_dtype)
    with pytest.raises(ERRORS, match=message):
        op.raw_forward(input, rois, scale, (2, 2))
