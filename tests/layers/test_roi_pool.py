"""Tests of detkit's RoI max pooling values (``detkit.layers.roi_pool``, ``torch.ops.detkit.*``).

Values are checked for exact equality against two independent implementations:
the slow loops in ``roi_pool_reference.py`` (written from the layer's rules) and
``torchvision.ops.roi_pool`` (same semantics for float32/float64), on the cases of
``roi_pool_cases.py`` and on larger shapes. Max pooling only ever copies input
values, so nothing needs a tolerance except the float16/bfloat16 CUDA gradients
(``test_roi_pool_cuda.py``) and ``torch.compile`` with inductor (``test_roi_ops.py``).
Layout and strided-view tests shared with RoIAlign are in ``test_roi_ops.py``.
"""

from __future__ import annotations

import pytest
import torch
from roi_pool_cases import (
    BACKWARD_CASES,
    CASES,
    build_case,
    detkit_forward,
    reference_forward,
    torchvision_forward,
)
from roi_pool_reference import (
    reference_roi_pool_backward,
    reference_roi_pool_forward,
)
from roi_testing import (
    FLOAT_DTYPES,
    MEMORY_FORMATS,
    dtype_id,
    grad_through,
    random_rois,
    to_format,
)
from torchvision.ops import roi_pool as tv_roi_pool

from detkit.layers import ROIPool, roi_pool

# ---------------------------------------------------------------- forward values


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference(name: str, dtype, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format)
    expected_output, expected_argmax = reference_forward(name, dtype)

    output, argmax = detkit_forward(input, rois, case.spatial_scale, case.output_size)
    assert output.dtype == dtype and argmax.dtype == torch.int32
    torch.testing.assert_close(output, expected_output, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(argmax, expected_argmax)

    # The inference path (no argmax) pools the same values.
    output, argmax = detkit_forward(input, rois, case.spatial_scale, case.output_size, False)
    torch.testing.assert_close(output, expected_output, rtol=0, atol=0, equal_nan=True)
    assert argmax.numel() == 0


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_torchvision(name: str, dtype, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format)
    output, argmax = detkit_forward(input, rois, case.spatial_scale, case.output_size)
    tv_output, tv_argmax = torchvision_forward(input, rois, case.spatial_scale, case.output_size)
    torch.testing.assert_close(output, tv_output, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(argmax, tv_argmax)
    with torch.no_grad():  # roi_pool's inference path
        pooled = roi_pool(input, rois, case.output_size, case.spatial_scale)
    torch.testing.assert_close(pooled, tv_output, rtol=0, atol=0, equal_nan=True)


def test_ties_go_to_the_first_cell() -> None:
    """Not only equal to the reference: constant input puts every argmax on a bin's first cell."""
    input = torch.ones(1, 2, 6, 8)
    rois = torch.tensor([[0.0, 1, 0, 6, 5]])  # columns 1..6, rows 0..5, 3 x 2 bins
    output, argmax = detkit_forward(input, rois, 1.0, (3, 2))
    assert torch.equal(output, torch.ones(1, 2, 3, 2))
    # Bins start at rows 0, 2, 4 and columns 1, 4 of a map 8 cells wide.
    first_cells = torch.tensor([[r * 8 + c for c in (1, 4)] for r in (0, 2, 4)])
    assert torch.equal(argmax, first_cells.int().expand(1, 2, 3, 2))


# ------------------------------------------------------------- backward values


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", BACKWARD_CASES)
def test_backward_matches_reference_and_torchvision(name: str, dtype, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format)
    _, expected_argmax = reference_forward(name, dtype)
    num_rois, (ph, pw) = rois.shape[0], case.output_size
    gen = torch.Generator().manual_seed(7)
    grad = torch.randn(num_rois, input.shape[1], ph, pw, generator=gen, dtype=dtype)

    _, grad_input = grad_through(roi_pool, input, rois, case.output_size, case.spatial_scale, grad)
    expected = reference_roi_pool_backward(grad, rois, expected_argmax, input.shape)
    assert grad_input.dtype == dtype
    assert torch.equal(grad_input, expected)
    _, tv_grad = grad_through(tv_roi_pool, input, rois, case.output_size, case.spatial_scale, grad)
    assert torch.equal(grad_input, tv_grad)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_accumulates_in_roi_order(dtype: torch.dtype) -> None:
    """Hundreds of gradients land on the same cells; float32 sums are order-sensitive."""
    gen = torch.Generator().manual_seed(3)
    input = torch.zeros(2, 3, 6, 6, dtype=dtype)  # all ties: every bin's first cell wins
    rois = random_rois(gen, 2, 600, 6, 6, spread=0.1).to(dtype)
    # Magnitudes from e^-40 to e^40: every cell's sum depends on the order of its terms.
    grad = (torch.randn(600, 3, 2, 2, generator=gen, dtype=dtype) * 10).exp()
    _, grad_input = grad_through(roi_pool, input, rois, (2, 2), 1.0, grad)
    _, argmax = reference_roi_pool_forward(input, rois, 1.0, 2, 2)
    expected = reference_roi_pool_backward(grad, rois, argmax, input.shape)
    assert torch.equal(grad_input, expected)
    reversed_order = reference_roi_pool_backward(
        grad.flip(0), rois.flip(0), argmax.flip(0), input.shape
    )
    assert not torch.equal(reversed_order, expected)  # so this test can tell orders apart
    _, tv_grad = grad_through(tv_roi_pool, input, rois, (2, 2), 1.0, grad)
    assert torch.equal(grad_input, tv_grad)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_op_routes_grad_to_argmax(dtype, memory_format) -> None:
    """The raw backward op, fed an argmax it did not compute itself (with -1 entries)."""
    gen = torch.Generator().manual_seed(5)
    n, c, h, w, k, ph, pw = 2, 3, 5, 4, 30, 2, 3
    rois = random_rois(gen, n, k, h, w).to(dtype)
    argmax = torch.randint(-1, h * w, (k, c, ph, pw), generator=gen, dtype=torch.int32)
    grad = torch.randn(k, c, ph, pw, generator=gen, dtype=dtype)
    grad, argmax = to_format(grad, memory_format), to_format(argmax, memory_format)
    grad_input = torch.ops.detkit.roi_pool_backward(grad, rois, argmax, 1.0, ph, pw, n, c, h, w)
    assert grad_input.shape == (n, c, h, w)
    assert torch.equal(grad_input, reference_roi_pool_backward(grad, rois, argmax, (n, c, h, w)))


# ------------------------------------------------------ torchvision, all the forms


@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_matches_torchvision_forward_backward(dtype, memory_format, rois_form) -> None:
    gen = torch.Generator().manual_seed(11)
    n, c, h, w = 3, 4, 12, 10
    input = to_format(torch.randn(n, c, h, w, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, n, 45, h, w, scale=0.5).to(dtype)
    if rois_form == "list":
        # Sorted by image: the list form returns RoIs image after image.
        rois = rois[rois[:, 0].argsort(stable=True)]
        boxes = [rois[rois[:, 0] == i, 1:] for i in range(n)]
    grad = torch.randn(45, c, 3, 4, generator=gen, dtype=dtype)

    arg = boxes if rois_form == "list" else rois
    output, grad_input = grad_through(roi_pool, input, arg, (3, 4), 0.5, grad)
    tv_output, tv_grad = grad_through(tv_roi_pool, input, arg, (3, 4), 0.5, grad)
    assert torch.equal(output, tv_output)
    assert torch.equal(grad_input, tv_grad)
    assert torch.equal(ROIPool((3, 4), 0.5)(input, arg), tv_output)


# (N, C, H, W, number of RoIs, largest RoI in cells or None for random ones anywhere)
CODE_PATHS = {
    "many-rois-nchw": ((1, 64, 38, 63), 500, None, torch.contiguous_format),
    "one-tiny-roi-big-map": ((1, 256, 100, 100), 1, 2, torch.contiguous_format),
    "many-rois-nhwc": ((1, 64, 38, 63), 500, None, torch.channels_last),
    "one-tiny-roi-nhwc": ((1, 256, 100, 100), 1, 2, torch.channels_last),
    # apart on two maps: each RoI's footprint copied on its own (40 channels: 4 + 1 vectors)
    "scattered-tiny-rois-nchw": ((2, 40, 60, 60), 6, 3, torch.contiguous_format),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("path", list(CODE_PATHS))
def test_code_paths_match_torchvision(path: str, dtype: torch.dtype) -> None:
    shape, num_rois, max_size, memory_format = CODE_PATHS[path]
    gen = torch.Generator().manual_seed(13)
    n, c, h, w = shape
    input = to_format(torch.randn(shape, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, n, num_rois, h, w, scale=1 / 16, max_size=max_size).to(dtype)
    grad = torch.randn(num_rois, c, 7, 7, generator=gen, dtype=dtype)
    output, grad_input = grad_through(roi_pool, input, rois, 7, 1 / 16, grad)
    tv_output, tv_grad = grad_through(tv_roi_pool, input, rois, 7, 1 / 16, grad)
    assert torch.equal(output, tv_output)
    assert torch.equal(grad_input, tv_grad)
    with torch.no_grad():
        assert torch.equal(roi_pool(input, rois, 7, 1 / 16), tv_output)


@pytest.mark.parametrize("rois_kind", ["few-tiny", "many"])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("channels", [1, 3, 17, 33, 128, 130, 256])
def test_channel_counts_match_torchvision(channels, dtype, memory_format, rois_kind) -> None:
    """Channel counts around the vector widths and channel blocks of the kernels."""
    gen = torch.Generator().manual_seed(channels)
    n, h, w = 2, 11, 13
    input = torch.randint(-4, 5, (n, channels, h, w), generator=gen).to(dtype)  # ties too
    input = to_format(input, memory_format)
    if rois_kind == "many":
        rois = random_rois(gen, n, 64, h, w)
    else:
        rois = random_rois(gen, n, 2, h, w, max_size=1.5)
    rois = rois.to(dtype)
    grad = torch.randn(rois.shape[0], channels, 3, 2, generator=gen, dtype=dtype)
    output, argmax = detkit_forward(input, rois, 1.0, (3, 2))
    tv_output, tv_argmax = torchvision_forward(input, rois, 1.0, (3, 2))
    assert torch.equal(output, tv_output)
    assert torch.equal(argmax, tv_argmax)
    assert torch.equal(detkit_forward(input, rois, 1.0, (3, 2), False)[0], tv_output)
    _, grad_input = grad_through(roi_pool, input, rois, (3, 2), 1.0, grad)
    _, tv_grad = grad_through(tv_roi_pool, input, rois, (3, 2), 1.0, grad)
    assert torch.equal(grad_input, tv_grad)


# ----------------------------------------------------------------- memory formats


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_raw_output_and_argmax_follow_input_memory_format(memory_format, dtype) -> None:
    """The raw forward op, with and without argmax (the function and its gradient are
    tested for both ops in ``test_roi_ops.py``)."""
    gen = torch.Generator().manual_seed(19)
    input = to_format(torch.randn(2, 5, 9, 10, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, 2, 7, 9, 10).to(dtype)
    output, argmax = detkit_forward(input, rois, 1.0, (3, 4))
    assert output.is_contiguous(memory_format=memory_format)
    assert argmax.is_contiguous(memory_format=memory_format)
    output, _ = detkit_forward(input, rois, 1.0, (3, 4), False)
    assert output.is_contiguous(memory_format=memory_format)

    other = torch.channels_last if memory_format == torch.contiguous_format else None
    if other is not None:  # and the values do not depend on the layout
        nhwc = to_format(input, other)
        assert torch.equal(detkit_forward(nhwc, rois, 1.0, (3, 4))[0], output)
