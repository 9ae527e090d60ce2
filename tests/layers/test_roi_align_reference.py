"""Tests of the RoIAlign reference itself (``roi_align_reference.py``).

The reference is written from the op's rules; these tests check it on cases
worked out by hand (a linear ramp, which bilinear sampling reproduces exactly,
and single samples placed on the borders) and against
``torchvision.ops.roi_align`` on the whole case table, bit for bit, so that the
tests of detkit's op can trust it. Nothing here imports detkit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from roi_align_cases import (
    CASES,
    CUDA_CASES,
    GRADCHECK_CASES,
    OPCHECK_CASES,
    TORCHVISION_CASES,
    build_case,
    reference_backward,
    reference_forward,
    with_options,
)
from roi_align_reference import (
    bilinear_sample,
    reference_roi_align_backward,
    reference_roi_align_forward,
    roi_geometry,
    sample_coordinate,
)
from roi_testing import FLOAT_DTYPES, dtype_id, grad_through
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align


def ramp(height: int = 4, width: int = 4, dtype=torch.float64, offset: float = 0.0) -> Tensor:
    """``[1, 1, H, W]`` with cell (y, x) holding ``10 * y + x + offset``."""
    y = torch.arange(height, dtype=dtype).view(-1, 1)
    x = torch.arange(width, dtype=dtype).view(1, -1)
    return (10 * y + x + offset).view(1, 1, height, width)


def forward(input: Tensor, rows, output_size, sampling_ratio=-1, aligned=False, scale=1.0):
    rois = torch.tensor(rows, dtype=input.dtype).view(-1, 5)
    return reference_roi_align_forward(input, rois, scale, *output_size, sampling_ratio, aligned)


# ------------------------------------------------------------------ by hand


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("sampling_ratio", [1, 2, 4, -1])
def test_reference_reproduces_a_ramp_at_the_bin_centres(sampling_ratio: int, dtype) -> None:
    """Inside ``[0, H - 1]``, bilinear sampling of ``10 y + x`` gives ``10 y + x`` and a
    symmetric grid averages to the bin's centre (dyadic numbers: no rounding at all)."""
    input = ramp(dtype=dtype)
    # Not aligned, 2 x 2 bins of one cell from (0.5, 0.5): centres at 1.0 and 2.0.
    output = forward(input, [0, 0.5, 0.5, 2.5, 2.5], (2, 2), sampling_ratio)
    assert output[0, 0].tolist() == [[11.0, 12.0], [21.0, 22.0]]
    # Aligned, the same box moves by half a cell: centres at 0.5 and 1.5.
    output = forward(input, [0, 0.5, 0.5, 2.5, 2.5], (2, 2), sampling_ratio, aligned=True)
    assert output[0, 0].tolist() == [[5.5, 6.5], [15.5, 16.5]]
    # Bins of half a cell by a quarter (y from 1 to 2, x from 0.5 to 1.5): 2 x 4 bins.
    output = forward(input, [0, 0.5, 1, 1.5, 2], (2, 4), sampling_ratio)
    centres_y, centres_x = [1.25, 1.75], [0.625, 0.875, 1.125, 1.375]
    assert output[0, 0].tolist() == [[10 * y + x for x in centres_x] for y in centres_y]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_reference_scales_corners_before_the_aligned_shift(dtype) -> None:
    input = ramp(dtype=dtype)
    # (16, 16) - (48, 48) at scale 1/16 is (1, 1) - (3, 3): one bin centred on (2, 2).
    assert forward(input, [0, 16, 16, 48, 48], (1, 1), 2, scale=1 / 16).item() == 22.0
    # Aligned: (0.5, 0.5) - (2.5, 2.5), centre (1.5, 1.5).
    assert forward(input, [0, 16, 16, 48, 48], (1, 1), 2, True, 1 / 16).item() == 16.5


def test_reference_samples_cell_centres_of_aligned_integer_boxes() -> None:
    """Aligned, one sample per cell-sized bin lands on a cell: the output copies the map."""
    gen = torch.Generator().manual_seed(1)
    input = torch.randn(1, 3, 6, 7, generator=gen)
    output = forward(input, [0, 1, 2, 5, 5], (3, 4), sampling_ratio=1, aligned=True)
    assert torch.equal(output[0], input[0, :, 2:5, 1:5])


def test_reference_clamps_samples_within_one_cell_of_the_border() -> None:
    input = ramp(offset=1.0)  # no zero cell: a sample that counts always shows
    # Rows 3..4 of a 4-row map: samples at y = 3.25 and 3.75 read row 3 (= H - 1).
    assert forward(input, [0, 1, 3, 2, 4], (1, 1), 2).item() == 31 + 1.5
    # Rows -1..0: samples at -0.75 and -0.25 are clamped to row 0.
    assert forward(input, [0, 1, -1, 2, 0], (1, 1), 2).item() == 1 + 1.5
    # Columns likewise.
    assert forward(input, [0, 3, 1, 4, 2], (1, 1), 2).item() == 1 + 15 + 3
    assert forward(input, [0, -1, 1, 0, 2], (1, 1), 2).item() == 1 + 15 + 0


def test_reference_counts_outside_samples_as_zero_in_the_average() -> None:
    input = ramp(offset=1.0)
    # Rows -2..0: the sample at y = -1.5 is outside and adds 0; y = -0.5 reads row 0;
    # with x at 1.25 and 1.75 the bin is (0 + 0 + 2.25 + 2.75) / 4.
    assert forward(input, [0, 1, -2, 2, 0], (1, 1), 2).item() == 5.0 / 4
    # Rows 3..5 of a 4-row map: y = 3.5 reads row 3, y = 4.5 is outside.
    assert forward(input, [0, 1, 3, 2, 5], (1, 1), 2).item() == (31 + 1.25 + 31 + 1.75) / 4
    # Every sample outside: 0.
    assert forward(input, [0, 1, 4.5, 2, 6], (1, 1), 2).item() == 0.0


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_reference_keeps_samples_at_minus_one_and_at_the_size_but_not_beyond(dtype) -> None:
    """A 1 x 1 RoI with one sample at its centre: ``y = -1`` and ``y = H`` count (clamped to
    the first and last row), ``-1 - eps`` and ``H + eps`` do not; x likewise."""
    input = ramp(height=4, width=5, dtype=dtype, offset=1.0)
    eps = 2.0**-10

    def at(y: float, x: float) -> float:
        return forward(input, [0, x - 0.5, y - 0.5, x + 0.5, y + 0.5], (1, 1), 1).item()

    assert at(-1.0, 2.0) == 1 + 2
    assert at(-1.0 - eps, 2.0) == 0.0
    assert at(4.0, 2.0) == 1 + 30 + 2
    assert at(4.0 + eps, 2.0) == 0.0
    assert at(2.0, -1.0) == 1 + 20
    assert at(2.0, -1.0 - eps) == 0.0
    assert at(2.0, 5.0) == 1 + 20 + 4
    assert at(2.0, 5.0 + eps) == 0.0
    assert at(3.5, 4.5) == 1 + 30 + 4  # between the last cell and the border: clamped
    # The aligned shift moves the box, not the rule: the same sample positions.
    shifted = [0, 2.0, -1.0, 3.0, 0.0]  # centre (y, x) = (-0.5, 2.5) - 0.5 = (-1, 2)
    assert forward(input, shifted, (1, 1), 1, aligned=True).item() == 1 + 2
    shifted = [0, 2.0, -1.0 - eps, 3.0, 0.0 - eps]
    assert forward(input, shifted, (1, 1), 1, aligned=True).item() == 0.0


def test_reference_bilinear_weights_by_hand() -> None:
    f = np.float64
    sample = bilinear_sample(f(1.25), f(2.5), 4, 4)
    assert (sample.y_low, sample.y_high, sample.x_low, sample.x_high) == (1, 2, 2, 3)
    assert sample.weights == (0.375, 0.375, 0.125, 0.125)
    # Past the last row and column: both indices H - 1 and W - 1, all weight on one cell.
    sample = bilinear_sample(f(3.5), f(3.75), 4, 4)
    assert (sample.y_low, sample.y_high, sample.x_low, sample.x_high) == (3, 3, 3, 3)
    assert sample.weights == (1.0, 0.0, 0.0, 0.0)
    # Between -1 and 0: clamped to 0.
    sample = bilinear_sample(f(-0.5), f(-1.0), 4, 4)
    assert (sample.y_low, sample.y_high, sample.x_low, sample.x_high) == (0, 1, 0, 1)
    assert sample.weights == (1.0, 0.0, 0.0, 0.0)
    assert bilinear_sample(f(-1.0000001), f(1.0), 4, 4) is None
    assert bilinear_sample(f(1.0), f(4.0000001), 4, 4) is None


def test_reference_sample_positions_by_hand() -> None:
    f = np.float32
    # Bin 1 of size 1.5 from 0.25, three samples: 1.75 + (k + 0.5) * 0.5.
    positions = [sample_coordinate(f(0.25), 1, f(1.5), k, 3) for k in range(3)]
    assert positions == [2.0, 2.5, 3.0]
    assert all(isinstance(p, np.float32) for p in positions)


@pytest.mark.parametrize(
    ("box", "output_size", "sampling_ratio", "aligned", "grid"),
    [
        ((0, 0, 3, 5), (2, 2), -1, False, (3, 2)),  # ceil(5 / 2), ceil(3 / 2)
        ((0, 0, 3, 5), (2, 2), 0, False, (3, 2)),  # 0 is adaptive too
        ((0, 0, 3, 5), (2, 2), 3, False, (3, 3)),
        ((0, 0, 14, 14), (7, 7), -1, True, (2, 2)),
        ((0, 0, 14.5, 14), (7, 7), -1, True, (2, 3)),
        ((2, 2, 2.1, 2.1), (2, 2), -1, False, (1, 1)),  # forced to 1 x 1: ceil(1 / 2)
        ((2, 2, 2, 2), (2, 2), -1, True, (0, 0)),  # aligned keeps the empty box
        ((2, 2, 2, 2), (2, 2), 2, True, (2, 2)),
        ((5, 5, 1, 1), (2, 2), -1, True, (-2, -2)),  # inverted: a negative count
        ((5, 5, 1, 1), (2, 2), -1, False, (1, 1)),
    ],
)
def test_reference_grid_counts(box, output_size, sampling_ratio, aligned, grid) -> None:
    g = roi_geometry([0, *box], 1.0, *output_size, sampling_ratio, aligned, np.float64)
    assert (g.grid_h, g.grid_w) == grid
    assert g.count == max(grid[0] * grid[1], 1)


@pytest.mark.parametrize(
    ("box", "sampling_ratio", "aligned"),
    [((2, 2, 2, 2), -1, True), ((5, 5, 1, 1), -1, True), ((5, 1, 1, 5), 0, True)],
)
def test_reference_bins_without_samples_are_zero(box, sampling_ratio, aligned) -> None:
    output = forward(ramp(offset=1.0), [0, *box], (2, 2), sampling_ratio, aligned)
    assert torch.equal(output, torch.zeros(1, 1, 2, 2, dtype=torch.float64))


def test_reference_geometry_uses_the_input_dtype() -> None:
    """The fact the float32-grid-count case relies on."""
    args = ([0, 9, 9, 19, 19], 0.7, 7, 7, -1, False)
    assert roi_geometry(*args, np.float32).grid_h == 2
    assert roi_geometry(*args, np.float64).grid_h == 1
    assert isinstance(roi_geometry(*args, np.float32).bin_height, np.float32)


def test_reference_backward_by_hand() -> None:
    rois = torch.tensor([[0.0, 2, 0.75, 3, 1.75], [0.0, 3, 3, 4, 4]], dtype=torch.float64)
    grad = torch.tensor([8.0, 5.0], dtype=torch.float64).view(2, 1, 1, 1)
    grad_input = reference_roi_align_backward(grad, rois, 1.0, 1, 1, 1, False, (1, 1, 4, 4))
    expected = torch.zeros(4, 4, dtype=torch.float64)
    # RoI 0: one sample at (1.25, 2.5), weights 0.375, 0.375, 0.125, 0.125 of 8.
    expected[1, 2], expected[1, 3], expected[2, 2], expected[2, 3] = 3.0, 3.0, 1.0, 1.0
    # RoI 1: one sample at (3.5, 3.5), clamped onto cell (3, 3), which gets all of 5.
    expected[3, 3] = 5.0
    assert torch.equal(grad_input[0, 0], expected)
    # Two samples per axis, one row of them outside: each sample sends a quarter.
    rois = torch.tensor([[0.0, 1, -2, 2, 0]], dtype=torch.float64)
    grad_input = reference_roi_align_backward(
        torch.full((1, 1, 1, 1), 4.0, dtype=torch.float64), rois, 1.0, 1, 1, 2, False, (1, 1, 4, 4)
    )
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 1], expected[0, 2] = 0.75 + 0.25, 0.25 + 0.75  # x = 1.25 and 1.75, row 0
    assert torch.equal(grad_input[0, 0], expected)


@pytest.mark.parametrize("name", GRADCHECK_CASES)
def test_reference_backward_is_the_adjoint_of_forward(name: str) -> None:
    """RoIAlign is linear in its input: ``<forward(x), g> == <x, backward(g)>``."""
    case = build_case(name)
    input, _ = case.cast(torch.float64)
    grad = case.grad_output(torch.float64)
    lhs = (reference_forward(name, torch.float64) * grad).sum()
    rhs = (input * reference_backward(name, torch.float64)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- against torchvision


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", TORCHVISION_CASES)
def test_reference_matches_torchvision_bit_for_bit(name: str, dtype: torch.dtype) -> None:
    """The reference is right: torchvision's forward and backward agree on every case."""
    case = build_case(name)
    input, rois = case.cast(dtype)
    output, grad_input = grad_through(
        with_options(tv_roi_align, case),
        input,
        rois,
        case.output_size,
        case.spatial_scale,
        case.grad_output(dtype),
    )
    torch.testing.assert_close(reference_forward(name, dtype), output, rtol=0, atol=0)
    torch.testing.assert_close(reference_backward(name, dtype), grad_input, rtol=0, atol=0)


def test_case_table_covers_the_options() -> None:
    """Every sampling ratio with both ``aligned`` values, torchvision on most cases, and
    subsets (for gradcheck, opcheck, CUDA) that name cases of the table."""
    options = {(ratio, aligned) for _, ratio, aligned in CASES.values()}
    assert options >= {(r, a) for r in (-1, 0, 1, 2, 3) for a in (False, True)}
    assert len(TORCHVISION_CASES) >= len(CASES) - 4
    assert set(GRADCHECK_CASES) | set(OPCHECK_CASES) | set(CUDA_CASES) <= set(CASES)


def test_reference_ignores_nan_at_the_origin_where_torchvision_does_not() -> None:
    """The deliberate difference: torchvision weighs cell (0, 0) by 0 for a sample outside
    the map, so a NaN there leaks out; here (and in detkit) such a sample adds nothing."""
    input = torch.ones(1, 1, 4, 4)
    input[0, 0, 0, 0] = float("nan")
    rois = torch.tensor([[0.0, 6, 6, 9, 9]])  # entirely outside
    assert torch.equal(
        reference_roi_align_forward(input, rois, 1.0, 2, 2, 2), torch.zeros(1, 1, 2, 2)
    )
    assert torch.isnan(tv_roi_align(input, rois, 2, 1.0, 2)).all()


def test_torchvision_cannot_pool_a_negative_sample_count() -> None:
    """Why ``TORCHVISION_CASES`` leaves out aligned RoIs inverted on one axis with an adaptive
    grid: torchvision fails on them; the reference (and detkit) pool them to 0."""
    input = ramp(dtype=torch.float32)
    rois = torch.tensor([[0.0, 3, 0, 0, 3]])  # x inverted by 3 cells, y upright
    with pytest.raises((RuntimeError, ValueError)):
        tv_roi_align(input, rois, 2, 1.0, -1, True)
    assert torch.equal(
        reference_roi_align_forward(input, rois, 1.0, 2, 2, -1, True), torch.zeros(1, 1, 2, 2)
    )
