"""Tests of detkit's RoIAlign values (``detkit.layers.roi_align``, ``torch.ops.detkit.*``).

On the CPU detkit does torchvision's arithmetic in torchvision's order, so
forward and backward are compared for exact equality with two independent
implementations: the slow loops of ``roi_align_reference.py`` (written from the
op's rules) and ``torchvision.ops.roi_align``. The cases come from the table in
``roi_align_cases.py``; larger shapes, which only the compiled ops can run
quickly, are compared with torchvision alone. ``K = 0``, layouts and strided views, which
RoIAlign shares with RoIPool, are tested for both ops in ``test_roi_ops.py``.
"""

from __future__ import annotations

import pytest
import torch
from roi_align_cases import (
    CASES,
    AlignCase,
    build_case,
    detkit_backward,
    detkit_forward,
    reference_backward,
    reference_forward,
    with_options,
)
from roi_align_reference import reference_roi_align_backward
from roi_testing import (
    FLOAT_DTYPES,
    MEMORY_FORMAT_IDS,
    MEMORY_FORMATS,
    boxes_per_image,
    dtype_id,
    grad_through,
    pooled_memory_format,
    random_rois,
    to_format,
)
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

from detkit.layers import ROIAlign, roi_align


def exactly(actual: Tensor, expected: Tensor) -> None:
    """Bitwise equal values (NaN where NaN), whatever the layouts."""
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------ forward values


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference_and_torchvision(name: str, dtype, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format)
    output = detkit_forward(input, rois, case)
    assert output.shape == (rois.shape[0], input.shape[1], *case.output_size)
    assert output.is_contiguous(memory_format=pooled_memory_format(input))
    exactly(output, reference_forward(name, dtype))
    if case.torchvision_can_run:
        exactly(output, tv_roi_align(input, rois, **case.kwargs()))
    with torch.no_grad():
        exactly(roi_align(input, rois, **case.kwargs()), output)


# ----------------------------------------------------------------- backward values


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_backward_matches_reference_and_torchvision(name: str, dtype, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(dtype, memory_format)
    grad = case.grad_output(dtype)
    args = (input, rois, case.output_size, case.spatial_scale, grad)
    _, grad_input = grad_through(with_options(roi_align, case), *args)
    assert grad_input.shape == input.shape
    exactly(grad_input, reference_backward(name, dtype))
    if case.torchvision_can_run:
        _, tv_grad = grad_through(with_options(tv_roi_align, case), *args)
        exactly(grad_input, tv_grad)


_LAYOUT_CASES = ["random-scale-1/sr=2/aligned", "outside/sr=-1/unaligned", "large-k/sr=1/aligned"]


@pytest.mark.parametrize("grad_layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", _LAYOUT_CASES)
def test_backward_op_takes_gradients_in_any_layout(name: str, dtype, grad_layout: str) -> None:
    """The raw backward op, fed upstream gradients laid out as autograd may hand them over."""
    case = build_case(name)
    _, rois = case.cast(dtype)
    grad = case.grad_output(dtype)
    if grad_layout == "nhwc":
        grad = to_format(grad, torch.channels_last)
    elif grad_layout == "strided":
        grad = torch.stack([grad, -grad], dim=-1)[..., 0]
        assert not grad.is_contiguous()
    grad_input = detkit_backward(grad, rois, case, case.input.shape)
    exactly(grad_input, reference_backward(name, dtype))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_accumulates_in_roi_order(dtype: torch.dtype, aligned: bool) -> None:
    """Hundreds of RoIs send gradients to the same few cells; float32 and float64 sums depend
    on the order of their terms, and detkit adds them RoI by RoI, bin by bin, sample by
    sample, like the reference and torchvision."""
    gen = torch.Generator().manual_seed(3)
    n, c, h, w = 2, 3, 5, 5
    input = torch.zeros(n, c, h, w, dtype=dtype)
    rois = random_rois(gen, n, 600, h, w, spread=0.1).to(dtype)
    # Magnitudes from e^-40 to e^40: every cell's sum depends on the order of its terms.
    grad = (torch.randn(600, c, 2, 2, generator=gen, dtype=dtype) * 10).exp()
    case = AlignCase(input, rois, (2, 2), 1.0, 2, aligned)
    _, grad_input = grad_through(with_options(roi_align, case), input, rois, (2, 2), 1.0, grad)
    expected = reference_roi_align_backward(grad, rois, *case.options, input.shape)
    exactly(grad_input, expected)
    reversed_order = reference_roi_align_backward(
        grad.flip(0), rois.flip(0), *case.options, input.shape
    )
    assert not torch.equal(reversed_order, expected)  # so this test can tell orders apart
    _, tv_grad = grad_through(with_options(tv_roi_align, case), input, rois, (2, 2), 1.0, grad)
    exactly(grad_input, tv_grad)


# ------------------------------------------------------- torchvision, all the forms


@pytest.mark.parametrize("options", [(-1, False), (0, True), (2, False), (3, True)])
@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_rois_forms_and_module_match_torchvision(dtype, memory_format, rois_form, options) -> None:
    sampling_ratio, aligned = options
    gen = torch.Generator().manual_seed(11)
    n, c, h, w = 3, 4, 12, 10
    input = to_format(torch.randn(n, c, h, w, generator=gen, dtype=dtype), memory_format)
    rois, boxes = boxes_per_image(random_rois(gen, n, 45, h, w, scale=0.5).to(dtype), n)
    arg = boxes if rois_form == "list" else rois
    grad = torch.randn(45, c, 3, 4, generator=gen, dtype=dtype)
    case = AlignCase(input, rois, (3, 4), 0.5, sampling_ratio, aligned)

    output, grad_input = grad_through(with_options(roi_align, case), input, arg, (3, 4), 0.5, grad)
    tv_output, tv_grad = grad_through(
        with_options(tv_roi_align, case), input, arg, (3, 4), 0.5, grad
    )
    exactly(output, tv_output)
    exactly(grad_input, tv_grad)
    module = ROIAlign((3, 4), 0.5, sampling_ratio, aligned)
    exactly(module(input, arg), tv_output)
    keywords = ROIAlign(
        output_size=(3, 4), spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned
    )
    exactly(keywords(input, arg), tv_output)


def test_defaults_are_torchvisions() -> None:
    """``spatial_scale=1``, ``sampling_ratio=-1``, ``aligned=False`` when left out."""
    gen = torch.Generator().manual_seed(12)
    input = torch.randn(2, 3, 9, 11, generator=gen)
    rois = random_rois(gen, 2, 20, 9, 11).float()
    exactly(roi_align(input, rois, 3), tv_roi_align(input, rois, 3))
    exactly(roi_align(input, rois, (3, 2)), tv_roi_align(input, rois, (3, 2)))


# (N, C, H, W, number of RoIs, largest RoI in cells or None for random ones anywhere,
#  spatial scale, sampling ratio, aligned, memory format)
CODE_PATHS = {
    "many-rois-nchw": ((1, 64, 38, 63), 500, None, 1 / 16, 0, True, torch.contiguous_format),
    "many-rois-nhwc": ((1, 64, 38, 63), 500, None, 1 / 16, 2, False, torch.channels_last),
    "one-tiny-roi-big-map": ((1, 256, 100, 100), 1, 2, 1 / 16, 0, True, torch.contiguous_format),
    "one-tiny-roi-nhwc": ((1, 256, 100, 100), 1, 2, 1 / 16, 2, False, torch.channels_last),
    "huge-rois-adaptive": ((2, 8, 38, 50), 40, 400, 1 / 16, 0, False, torch.contiguous_format),
    "huge-rois-nhwc": ((2, 8, 38, 50), 40, 400, 1 / 16, -1, True, torch.channels_last),
    "fpn-level-sizes": ((2, 32, 50, 76), 256, 40, 1 / 8, 0, True, torch.contiguous_format),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("path", list(CODE_PATHS))
def test_code_paths_match_torchvision(path: str, dtype: torch.dtype) -> None:
    """Shapes of real models, and huge RoIs whose adaptive grids take hundreds of samples."""
    shape, num_rois, max_size, scale, sampling_ratio, aligned, memory_format = CODE_PATHS[path]
    gen = torch.Generator().manual_seed(13)
    n, c, h, w = shape
    input = to_format(torch.randn(shape, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, n, num_rois, h, w, scale=scale, max_size=max_size).to(dtype)
    if max_size is not None and max_size > 100:  # also reach far outside the map
        rois[:, 1:3] -= max_size / scale / 4
    grad = torch.randn(num_rois, c, 7, 7, generator=gen, dtype=dtype)
    case = AlignCase(input, rois, (7, 7), scale, sampling_ratio, aligned)
    output, grad_input = grad_through(with_options(roi_align, case), input, rois, 7, scale, grad)
    tv_output, tv_grad = grad_through(with_options(tv_roi_align, case), input, rois, 7, scale, grad)
    exactly(output, tv_output)
    exactly(grad_input, tv_grad)
    assert output.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("channels", [1, 3, 17, 33, 128, 130, 256])
def test_channel_counts_match_torchvision(channels: int, dtype, memory_format) -> None:
    """Channel counts around the vector widths and channel blocks a kernel may use."""
    gen = torch.Generator().manual_seed(channels)
    n, h, w = 2, 11, 13
    input = to_format(torch.randn(n, channels, h, w, generator=gen, dtype=dtype), memory_format)
    rois = torch.cat(
        [random_rois(gen, n, 30, h, w), random_rois(gen, n, 2, h, w, max_size=1.5)]
    ).to(dtype)
    grad = torch.randn(rois.shape[0], channels, 3, 2, generator=gen, dtype=dtype)
    case = AlignCase(input, rois, (3, 2), 1.0, -1, True)
    output, grad_input = grad_through(with_options(roi_align, case), input, rois, (3, 2), 1.0, grad)
    tv_output, tv_grad = grad_through(
        with_options(tv_roi_align, case), input, rois, (3, 2), 1.0, grad
    )
    exactly(output, tv_output)
    exactly(grad_input, tv_grad)


# ------------------------------------------------------------- threads, determinism


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_results_do_not_depend_on_the_thread_count(dtype, memory_format, num_threads) -> None:
    """The CPU kernels split their work over threads without changing a bit of the result."""
    gen = torch.Generator().manual_seed(97)
    n, c, h, w = 2, 64, 25, 38
    input = to_format(torch.randn(n, c, h, w, generator=gen, dtype=dtype), memory_format)
    # Many overlapping RoIs, so threads that split RoIs would share cells.
    rois = random_rois(gen, n, 400, h, w, scale=1 / 8).to(dtype)
    grad = torch.randn(400, c, 7, 7, generator=gen, dtype=dtype)
    case = AlignCase(input, rois, (7, 7), 1 / 8, 0, True)
    results = {}
    for threads in (1, 2):
        num_threads(threads)
        results[threads] = grad_through(with_options(roi_align, case), input, rois, 7, 1 / 8, grad)
    for one_thread, two_threads in zip(results[1], results[2], strict=True):
        exactly(two_threads, one_thread)
    _, tv_grad = grad_through(with_options(tv_roi_align, case), input, rois, 7, 1 / 8, grad)
    exactly(results[2][1], tv_grad)


def test_cpu_backward_runs_under_deterministic_algorithms(deterministic) -> None:
    """``torch.use_deterministic_algorithms(True)`` neither refuses the CPU backward (it is
    deterministic) nor changes its result."""
    name = "random-scale-1/sr=2/aligned"
    case = build_case(name)
    input, rois = case.cast(torch.float32)
    grad = case.grad_output(torch.float32)
    args = (input, rois, case.output_size, case.spatial_scale, grad)
    _, grad_input = grad_through(with_options(roi_align, case), *args)
    exactly(grad_input, reference_backward(name, torch.float32))
