"""Tests of the RoIPool reference itself (``roi_pool_reference.py``).

The reference is written from the layer's rules; these tests check it by hand on
small cases and against ``torchvision.ops.roi_pool`` on every case of the table,
so that the tests of detkit's op can trust it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from roi_pool_cases import (
    CASES,
    build_case,
    reference_forward,
    torchvision_forward,
)
from roi_pool_reference import (
    FLT_MAX,
    bin_bounds,
    reference_roi_pool_backward,
    reference_roi_pool_forward,
    roi_geometry,
    round_half_away_from_zero,
)
from roi_testing import (
    FLOAT_DTYPES,
    dtype_id,
)

# ------------------------------------------------------- the reference on its own


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 1),
        (1.5, 2),
        (2.5, 3),
        (-0.5, -1),
        (-2.5, -3),
        (0.49999999999999994, 0),
        (2.4999, 2),
        (-1.2, -1),
        (-1.7, -2),
        (0.0, 0),
        (7.0, 7),
    ],
)
def test_reference_rounds_half_away_from_zero(value: float, expected: int) -> None:
    assert round_half_away_from_zero(value) == expected


def test_reference_geometry_by_hand() -> None:
    # RoI (8, 24) - (40, 56) at scale 1/16: corners 0.5 -> 1, 1.5 -> 2, 2.5 -> 3, 3.5 -> 4,
    # so columns 1..3 (3 cells) and rows 2..4 (3 cells), split in 2 bins each.
    batch, rows, cols = roi_geometry([1, 8, 24, 40, 56], 1 / 16, 2, 2, 10, 10)
    assert batch == 1
    assert rows == [(2, 4), (3, 5)]
    assert cols == [(1, 3), (2, 4)]
    # An inverted RoI is one cell; bins past the map are clipped and empty.
    assert roi_geometry([0, 5, 5, 1, 1], 1.0, 2, 1, 10, 4) == (0, [(5, 6), (5, 6)], [(4, 4)])


def test_reference_geometry_uses_float32_arithmetic() -> None:
    # The facts the float32-* cases rely on.
    assert round_half_away_from_zero(np.float32(5) * np.float32(0.7)) == 4
    assert round_half_away_from_zero(np.float64(np.float32(5)) * np.float64(np.float32(0.7))) == 3
    assert round_half_away_from_zero(np.float32(45) * np.float32(0.7)) == 32
    assert round_half_away_from_zero(np.float64(45) * np.float64(0.7)) == 31
    assert round_half_away_from_zero(np.float32(85) * np.float32(0.7)) == 60
    assert round_half_away_from_zero(np.float64(85) * np.float64(0.7)) == 59
    assert bin_bounds(0, 62, 14, 100, np.float32)[7][0] == 30
    assert bin_bounds(0, 62, 14, 100, np.float64)[7][0] == 31
    assert bin_bounds(0, 7, 13, 100, np.float32)[-1][1] == 8
    assert bin_bounds(0, 7, 13, 100, np.float64)[-1][1] == 7


def test_reference_forward_by_hand() -> None:
    input = torch.arange(16.0).reshape(1, 1, 4, 4)
    input[0, 0, 0, 0] = 5.0  # ties with cell 5, and comes first
    rois = torch.tensor([[0.0, 0, 0, 3, 3], [0.0, 9, 9, 12, 12], [0.0, 0, 0, 1, 1]])
    output, argmax = reference_roi_pool_forward(input, rois, 1.0, 2, 2)
    assert output[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert argmax[0, 0].tolist() == [[0, 7], [13, 15]]
    assert output[1, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # outside: empty bins
    assert argmax[1, 0].tolist() == [[-1, -1], [-1, -1]]
    assert output[2, 0].tolist() == [[5.0, 1.0], [4.0, 5.0]]
    assert argmax[2, 0].tolist() == [[0, 1], [4, 5]]
    grad = reference_roi_pool_backward(torch.ones(3, 1, 2, 2), rois, argmax, input.shape)
    expected = torch.zeros(16)
    expected[[1, 4, 5, 7, 13, 15]] = 1.0
    expected[0] = 2.0  # the maximum of a bin in RoI 0 and of one in RoI 2
    assert torch.equal(grad.flatten(), expected)


def test_reference_all_nan_bin_keeps_minus_flt_max() -> None:
    input = torch.full((1, 1, 2, 2), float("nan"))
    output, argmax = reference_roi_pool_forward(input, torch.tensor([[0.0, 0, 0, 1, 1]]), 1.0, 1, 1)
    assert output.item() == -FLT_MAX
    assert argmax.item() == -1


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_torchvision(name: str, dtype: torch.dtype) -> None:
    """The reference is right: torchvision agrees with it on every case."""
    case = build_case(name)
    input, rois = case.cast(dtype)
    output, argmax = reference_forward(name, dtype)
    tv_output, tv_argmax = torchvision_forward(input, rois, case.spatial_scale, case.output_size)
    torch.testing.assert_close(output, tv_output, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(argmax, tv_argmax)
