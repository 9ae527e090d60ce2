"""Tests of detkit's RoI max pooling (``detkit.layers.roi_pool``, ``torch.ops.detkit.*``).

Values are checked for exact equality against two independent implementations:
the slow loops in ``roi_pool_reference.py`` (written from the layer's rules) and
``torchvision.ops.roi_pool`` (same semantics for float32/float64). Max pooling
only ever copies input values, so nothing here needs a tolerance except the
float16/bfloat16 CUDA gradients and ``torch.compile`` with inductor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from roi_pool_reference import (
    FLT_MAX,
    bin_bounds,
    reference_roi_pool_backward,
    reference_roi_pool_forward,
    roi_geometry,
    round_half_away_from_zero,
)
from torch import Tensor, nn
from torchvision.ops import roi_pool as tv_roi_pool

from detkit.layers import ROIPool, roi_pool

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

FLOAT_DTYPES = [torch.float32, torch.float64]
MEMORY_FORMATS = [torch.contiguous_format, torch.channels_last]
ERRORS = (ValueError, RuntimeError)


def dtype_id(value) -> str | None:
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None


def detkit_forward(
    input: Tensor, rois: Tensor, scale: float, output_size: tuple[int, int], with_argmax=True
) -> tuple[Tensor, Tensor]:
    return torch.ops.detkit.roi_pool_forward(input, rois, scale, *output_size, with_argmax)


def torchvision_forward(
    input: Tensor, rois: Tensor, scale: float, output_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    return torch.ops.torchvision.roi_pool(input, rois, scale, *output_size)


def grad_through(
    pool: Callable[..., Tensor], input: Tensor, rois, output_size, scale, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """(output, input gradient) of ``pool`` for the upstream gradient ``grad``."""
    leaf = input.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    output = pool(leaf, rois, output_size, scale)
    output.backward(grad)
    return output.detach(), leaf.grad


def to_format(t: Tensor, memory_format: torch.memory_format) -> Tensor:
    return t.contiguous(memory_format=memory_format)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    input: Tensor  # float64, NCHW
    rois: Tensor  # float64, [K, 5]
    output_size: tuple[int, int]
    spatial_scale: float

    def cast(self, dtype: torch.dtype, memory_format=torch.contiguous_format, device="cpu"):
        input = to_format(self.input.to(device=device, dtype=dtype), memory_format)
        return input, self.rois.to(device=device, dtype=dtype)


def random_rois(
    gen: torch.Generator,
    num_images: int,
    num_rois: int,
    height: int,
    width: int,
    scale: float = 1.0,
    spread: float = 0.25,
    max_size: float | None = None,
    integer: bool = False,
) -> Tensor:
    """``[K, 5]`` float64 RoIs in image pixels; corners reach ``spread`` beyond the map."""
    size = torch.tensor([width, height], dtype=torch.float64)
    if max_size is None:
        a = torch.rand(num_rois, 2, 2, generator=gen, dtype=torch.float64)
        corners = (a * (1 + 2 * spread) - spread) * size
        first, second = corners.min(dim=1).values, corners.max(dim=1).values
    else:
        first = torch.rand(num_rois, 2, generator=gen, dtype=torch.float64) * size
        second = first + torch.rand(num_rois, 2, generator=gen, dtype=torch.float64) * max_size
    boxes = torch.cat([first, second], dim=1) / scale
    if integer:
        boxes = boxes.round()
    batch = torch.randint(0, num_images, (num_rois, 1), generator=gen).double()
    return torch.cat([batch, boxes], dim=1)


def rois_from(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _random(gen, shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _case_random_scale_1(gen):
    return Case(_random(gen, (2, 3, 13, 17)), random_rois(gen, 2, 40, 13, 17), (7, 7), 1.0)


def _case_random_scale_half(gen):
    rois = random_rois(gen, 2, 40, 11, 9, scale=0.5, integer=True)
    return Case(_random(gen, (2, 3, 11, 9)), rois, (3, 5), 0.5)


def _case_random_scale_sixteenth(gen):
    rois = random_rois(gen, 3, 40, 10, 14, scale=1 / 16)
    return Case(_random(gen, (3, 2, 10, 14)), rois, (14, 6), 1 / 16)


def _case_random_scale_0_7(gen):
    # 0.7 is not a float32 number: the scaled corners round differently in
    # float32 and float64 arithmetic now and then.
    rois = random_rois(gen, 2, 60, 12, 12, scale=0.7, integer=True)
    return Case(_random(gen, (2, 2, 12, 12)), rois, (2, 3), 0.7)


def _case_one_by_one_output(gen):
    return Case(_random(gen, (2, 3, 9, 8)), random_rois(gen, 2, 20, 9, 8), (1, 1), 1.0)


def _case_outside(gen):
    h, w = 8, 10
    rows = [
        [0, -20, -20, -5, -5],  # fully above-left
        [0, 12, 2, 30, 6],  # fully right
        [1, 2, 9, 6, 40],  # fully below
        [1, -3, -3, 2, 2],  # straddles the top-left corner
        [0, 7, 5, 14, 12],  # straddles the bottom-right corner
        [1, -50, -50, 60, 60],  # covers the map and far beyond
        [0, -1, 3, 3, 3],  # a row, partly outside
        [1, w, 0, w + 3, h],  # starts right at the edge: outside
        [0, w - 1, h - 1, w + 5, h + 5],  # only the last cell is inside
    ]
    return Case(_random(gen, (2, 2, h, w)), rois_from(rows), (3, 4), 1.0)


def _case_degenerate(gen):
    rows = [
        [0, 3, 3, 3, 3],  # one cell
        [0, 2, 1, 2, 6],  # x1 == x2
        [1, 0, 4, 7, 4],  # y1 == y2
        [1, 8, 6, 8, 6],  # the last cell
        [0, 9, 2, 9, 2],  # one cell just outside
        [0, 0.4, 0.3, 0.2, 0.1],  # rounds to one cell
    ]
    return Case(_random(gen, (2, 3, 7, 9)), rois_from(rows), (2, 3), 1.0)


def _case_inverted(gen):
    rows = [
        [0, 6, 5, 1, 1],  # both axes inverted
        [1, 5, 1, 2, 6],  # x inverted
        [0, 1, 6, 6, 2],  # y inverted
        [1, 8, 6, 0, 0],
        [0, -2, -2, -9, -9],  # inverted and outside
    ]
    return Case(_random(gen, (2, 2, 7, 9)), rois_from(rows), (3, 3), 1.0)


def _case_half_points_scaled(gen):
    # With scale 1/16, 8 -> 0.5 -> 1, 24 -> 1.5 -> 2, 40 -> 2.5 -> 3 and
    # -8 -> -0.5 -> -1: C's round, not banker's rounding (which gives 0, 2, 2, 0).
    rows = [
        [0, 8, 8, 40, 40],
        [0, 24, 8, 72, 24],
        [1, -8, -8, 24, 56],
        [1, -24, 40, 8, 88],
        [0, 40, 56, 104, 120],
        [1, 8, 24, 8, 24],
    ]
    return Case(_random(gen, (2, 3, 9, 8)), rois_from(rows), (3, 2), 1 / 16)


def _case_half_points_unscaled(gen):
    rows = [
        [0, 0.5, 0.5, 2.5, 3.5],
        [0, -0.5, -0.5, 1.5, 1.5],
        [1, 2.5, 0.5, 4.5, 2.5],
        [1, -1.5, 1.5, 0.5, 5.5],
    ]
    return Case(_random(gen, (2, 2, 7, 6)), rois_from(rows), (2, 2), 1.0)


def _case_float32_corner_rounding(gen):
    # In float32, 45 * 0.7 is exactly 31.5 (-> 32) and 85 * 0.7 is 59.5 (-> 60);
    # in float64 they are 31.499... (-> 31) and 59.499... (-> 59). And 5 * 0.7 is
    # 3.5 in float32, 3.4999999 when the same float32 numbers are multiplied in float64.
    rows = [[0, 5, 5, 45, 85], [0, 45, 5, 85, 45], [0, 15, 25, 25, 45], [0, 85, 85, 88, 88]]
    return Case(_random(gen, (1, 2, 64, 64)), rois_from(rows), (3, 3), 0.7)


def _case_float32_bins_14(gen):
    # Rows 1..62 (62 cells) in 14 bins: float32 puts bin 7's start at row 30
    # (float64: 31); columns 1..58 in 14 bins: bin 6 ends at 29 (float64: 30).
    rows = [[0, 1, 1, 58, 62], [0, 2, 0, 59, 61]]
    return Case(_random(gen, (1, 2, 64, 64)), rois_from(rows), (14, 14), 1.0)


def _case_float32_bins_13(gen):
    # 7 cells in 13 bins: in float32 the last bin ends at 8, one cell past the RoI.
    rows = [[0, 10, 10, 16, 16], [0, 3, 4, 16, 10]]
    return Case(_random(gen, (1, 2, 24, 24)), rois_from(rows), (13, 13), 1.0)


def _case_ties_constant(gen):
    return Case(
        torch.ones(2, 3, 9, 11, dtype=torch.float64), random_rois(gen, 2, 30, 9, 11), (3, 3), 1.0
    )


def _case_ties_integers(gen):
    input = torch.randint(0, 3, (2, 4, 10, 9), generator=gen).double()
    return Case(input, random_rois(gen, 2, 40, 10, 9), (2, 4), 1.0)


def _case_ties_negative(gen):
    # Every cell equal and negative: the first cell of a bin still wins.
    input = torch.full((1, 2, 6, 6), -7.0, dtype=torch.float64)
    return Case(input, random_rois(gen, 1, 20, 6, 6, spread=0.0), (2, 2), 1.0)


def _case_special_values(gen):
    # NaN never wins; a bin of -inf and NaN only keeps -FLT_MAX with argmax -1.
    input = torch.randint(-2, 2, (1, 3, 8, 8), generator=gen).double()
    input[0, 0, :4, :4] = float("nan")
    input[0, 1, :4, :4] = -float("inf")
    input[0, 2, :4, :4] = float("nan")
    input[0, 2, 1::2, :4] = -float("inf")
    input[0, :, 5, 5] = float("inf")
    input[0, :, 2, 6] = float("nan")
    # Below -FLT_MAX in float64 (and -inf once cast to float32): never wins either.
    input[0, :, 4:, :2] = -1e300
    rows = [
        [0, 0, 0, 3, 3],
        [0, 0, 0, 7, 7],
        [0, 2, 2, 6, 6],
        [0, 4, 1, 7, 7],
        [0, 0, 4, 1, 7],  # only -1e300 cells
    ]
    return Case(input, torch.cat([rois_from(rows), random_rois(gen, 1, 20, 8, 8)]), (2, 2), 1.0)


def _case_many_images(gen):
    rois = random_rois(gen, 4, 50, 9, 7, scale=0.5)
    return Case(_random(gen, (4, 2, 9, 7)), rois, (7, 7), 0.5)


def _case_large_k(gen):
    rois = random_rois(gen, 2, 3000, 24, 24, scale=1 / 16, max_size=4)
    return Case(_random(gen, (2, 2, 24, 24)), rois, (2, 2), 1 / 16)


def _case_wide_map(gen):
    return Case(_random(gen, (1, 2, 5, 31)), random_rois(gen, 1, 30, 5, 31), (3, 5), 1.0)


def _case_tall_map(gen):
    return Case(_random(gen, (2, 2, 29, 4)), random_rois(gen, 2, 30, 29, 4), (5, 3), 1.0)


def _case_one_cell_map(gen):
    return Case(_random(gen, (2, 3, 1, 1)), random_rois(gen, 2, 10, 1, 1, spread=2.0), (2, 2), 1.0)


CASES: dict[str, Callable[[torch.Generator], Case]] = {
    "random-scale-1": _case_random_scale_1,
    "random-scale-1/2": _case_random_scale_half,
    "random-scale-1/16": _case_random_scale_sixteenth,
    "random-scale-0.7": _case_random_scale_0_7,
    "output-1x1": _case_one_by_one_output,
    "outside": _case_outside,
    "degenerate": _case_degenerate,
    "inverted": _case_inverted,
    "half-points-scaled": _case_half_points_scaled,
    "half-points-unscaled": _case_half_points_unscaled,
    "float32-corner-rounding": _case_float32_corner_rounding,
    "float32-bins-14": _case_float32_bins_14,
    "float32-bins-13": _case_float32_bins_13,
    "ties-constant": _case_ties_constant,
    "ties-integers": _case_ties_integers,
    "ties-negative": _case_ties_negative,
    "special-values": _case_special_values,
    "many-images": _case_many_images,
    "large-k": _case_large_k,
    "wide-map": _case_wide_map,
    "tall-map": _case_tall_map,
    "one-cell-map": _case_one_cell_map,
}
# Cases whose reference backward is cheap enough to run for every layout and dtype.
BACKWARD_CASES = [name for name in CASES if name != "large-k"]


def build_case(name: str) -> Case:
    return CASES[name](torch.Generator().manual_seed(sum(map(ord, name))))


_reference_cache: dict[tuple, tuple[Tensor, Tensor]] = {}


def reference_forward(name: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The reference forward of a case, computed once per (case, dtype)."""
    key = (name, dtype)
    if key not in _reference_cache:
        case = build_case(name)
        input, rois = case.cast(dtype)
        _reference_cache[key] = reference_roi_pool_forward(
            input, rois, case.spatial_scale, *case.output_size
        )
    return _reference_cache[key]


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


def test_strided_input_and_rois() -> None:
    """Views that are neither NCHW nor channels-last pool like their copies."""
    gen = torch.Generator().manual_seed(17)
    base = torch.randn(2, 6, 9, 14, generator=gen)
    input = base[:, ::2, :, ::2]  # [2, 3, 9, 7], no dense layout
    assert not input.is_contiguous() and not input.is_contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(25, 10)
    wide[:, ::2][:, :5] = random_rois(gen, 2, 25, 9, 7).float()
    rois = wide[:, ::2][:, :5]  # [25, 5] with a column stride of 2
    assert not rois.is_contiguous()
    grad = torch.randn(25, 3, 2, 3, generator=gen)
    output, grad_input = grad_through(roi_pool, input, rois, (2, 3), 1.0, grad)
    expected_output, expected_grad = grad_through(
        roi_pool, input.contiguous(), rois.contiguous(), (2, 3), 1.0, grad
    )
    assert torch.equal(output, expected_output)
    assert torch.equal(grad_input, expected_grad)
    assert torch.equal(output, tv_roi_pool(input.contiguous(), rois.contiguous(), (2, 3), 1.0))


# ----------------------------------------------------------------- memory formats


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_outputs_follow_input_memory_format(memory_format, dtype) -> None:
    gen = torch.Generator().manual_seed(19)
    input = to_format(torch.randn(2, 5, 9, 10, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, 2, 7, 9, 10).to(dtype)
    output, argmax = detkit_forward(input, rois, 1.0, (3, 4))
    assert output.is_contiguous(memory_format=memory_format)
    assert argmax.is_contiguous(memory_format=memory_format)
    output, _ = detkit_forward(input, rois, 1.0, (3, 4), False)
    assert output.is_contiguous(memory_format=memory_format)

    leaf = input.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    pooled = roi_pool(leaf, rois, (3, 4))
    assert pooled.is_contiguous(memory_format=memory_format)
    pooled.backward(torch.ones_like(pooled))
    assert leaf.grad.is_contiguous(memory_format=memory_format)

    other = torch.channels_last if memory_format == torch.contiguous_format else None
    if other is not None:  # and the values do not depend on the layout
        nhwc = to_format(input, other)
        assert torch.equal(detkit_forward(nhwc, rois, 1.0, (3, 4))[0], output)


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


# -------------------------------------------------------------------- torch.compile


class TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = ROIPool((2, 3), 0.5)
        self.head = nn.Linear(4 * 2 * 3, 5)

    def forward(self, images: Tensor, rois) -> Tensor:
        features = torch.relu(self.conv(images))
        return self.head(self.pool(features, rois).flatten(1))


def _compile_inputs(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    images = torch.randn(2, 3, 10, 12, generator=gen)
    return images, random_rois(gen, 2, 6, 10, 12, scale=0.5).float()


def _outputs_and_grads(model: nn.Module, images: Tensor, rois) -> list[Tensor]:
    images = images.clone().requires_grad_()
    model.zero_grad()
    model(images, rois).square().sum().backward()
    return [model(images, rois).detach(), images.grad, *(p.grad for p in model.parameters())]


def test_compile_fullgraph_aot_eager() -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(37)
    torch.manual_seed(0)
    model = TinyDetector()
    images, rois = _compile_inputs(gen)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    expected = _outputs_and_grads(model, images, boxes)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    actual = _outputs_and_grads(compiled, images, boxes)
    assert counter.frame_count >= 1
    assert any("detkit.roi_pool_forward" in str(g.code) for g in counter.graphs)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


def test_compile_fullgraph_inductor() -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(41)
    torch.manual_seed(0)
    model = TinyDetector()
    images, rois = _compile_inputs(gen)
    expected = _outputs_and_grads(model, images, rois)
    actual = _outputs_and_grads(torch.compile(model, fullgraph=True), images, rois)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


# ---------------------------------------------------------- empty RoIs, the module


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_form", ["tensor", "list"])
def test_no_rois(rois_form: str, dtype, memory_format) -> None:
    input = to_format(torch.randn(2, 3, 5, 6, dtype=dtype), memory_format).requires_grad_()
    if rois_form == "tensor":
        rois = torch.empty(0, 5, dtype=dtype)
    else:
        rois = [torch.empty(0, 4, dtype=dtype), torch.empty(0, 4, dtype=dtype)]
    output = roi_pool(input, rois, (3, 4), 0.25)
    assert output.shape == (0, 3, 3, 4)
    assert output.dtype == dtype
    output.sum().backward()
    assert input.grad.shape == input.shape
    assert torch.equal(input.grad, torch.zeros_like(input))
    with torch.no_grad():
        assert roi_pool(input, rois, 2).shape == (0, 3, 2, 2)
    raw_output, argmax = detkit_forward(input.detach(), torch.empty(0, 5, dtype=dtype), 1.0, (2, 2))
    assert raw_output.shape == argmax.shape == (0, 3, 2, 2)


def test_module() -> None:
    pool = ROIPool(7, 1 / 16)
    assert pool.output_size == (7, 7)
    text = repr(pool)
    assert "output_size=(7, 7)" in text
    assert "spatial_scale=0.0625" in text
    assert "output_size=(3, 5)" in repr(ROIPool((3, 5), 0.5))

    gen = torch.Generator().manual_seed(43)
    input = torch.randn(2, 3, 10, 10, generator=gen)
    rois = random_rois(gen, 2, 9, 10, 10, scale=1 / 16).float()
    assert torch.equal(pool(input, rois), roi_pool(input, rois, (7, 7), 1 / 16))
    assert torch.equal(pool(input, rois), roi_pool(input, rois, 7, 1 / 16))


# -------------------------------------------------------------------------- errors


def _input_rois(n=2, c=3, h=6, w=7, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    return torch.randn(n, c, h, w, dtype=dtype), torch.tensor([[1.0, 0, 0, 3, 3]], dtype=dtype)


@pytest.mark.parametrize(
    "input_shape", [(3, 6, 7), (1, 2, 3, 6, 7), (6,)], ids=["3-D", "5-D", "1-D"]
)
def test_input_must_be_4d(input_shape) -> None:
    _, rois = _input_rois()
    with pytest.raises(ERRORS, match="4-D"):
        roi_pool(torch.randn(input_shape), rois, 2)


@pytest.mark.parametrize("rois_shape", [(1, 4), (1, 6), (5,), (1, 1, 5)])
def test_rois_must_be_k_by_5(rois_shape) -> None:
    input, _ = _input_rois()
    with pytest.raises(ERRORS, match=r"\[K, 5\]"):
        roi_pool(input, torch.zeros(rois_shape), 2)


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 0.5, 1e9, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_bad_batch_index(batch_index: float, dtype) -> None:
    input, _ = _input_rois(dtype=dtype)
    rois = torch.tensor([[0.0, 0, 0, 3, 3], [batch_index, 0, 0, 3, 3]], dtype=dtype)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        roi_pool(input, rois, 2)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        detkit_forward(input, rois, 1.0, (2, 2))


@pytest.mark.parametrize("column", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_corner(column: int, value: float) -> None:
    input, rois = _input_rois()
    rois = torch.cat([torch.tensor([[0.0, 1, 1, 2, 2]]), rois])
    rois[1, column] = value
    with pytest.raises(ValueError, match=r"(?i)finite"):
        roi_pool(input, rois, 2)


def test_device_mismatch_with_meta() -> None:
    """CPU-only stand-in for a CPU/CUDA mismatch: the meta device."""
    input, rois = _input_rois()
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input, rois.to("meta"), 1.0, (2, 2))
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input.to("meta"), rois, 1.0, (2, 2))


@pytest.mark.parametrize(
    ("input_dtype", "rois_dtype"),
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.float16),  # float16 on CPU outside autocast
        (torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.int32, torch.int32),
        (torch.int64, torch.float32),
    ],
)
def test_dtype_errors(input_dtype, rois_dtype) -> None:
    input = torch.ones(1, 2, 4, 4).to(input_dtype)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]]).to(rois_dtype)
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        roi_pool(input, rois, 2)


@pytest.mark.parametrize("output_size", [0, -1, (0, 2), (2, 0), (2, -3), (2,), (2, 2, 2), 2.5])
def test_bad_output_size(output_size) -> None:
    input, rois = _input_rois()
    with pytest.raises(ERRORS, match="output_size"):
        roi_pool(input, rois, output_size)
    with pytest.raises(ERRORS, match="output_size"):
        ROIPool(output_size, 1.0)


@pytest.mark.parametrize(("pooled_height", "pooled_width"), [(0, 2), (2, 0), (-1, 2)])
def test_raw_op_bad_pooled_size(pooled_height: int, pooled_width: int) -> None:
    input, rois = _input_rois()
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_pool_forward(input, rois, 1.0, pooled_height, pooled_width)
    grad = torch.zeros(1, 3, 2, 2)
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_pool_backward(
            grad, rois, argmax, 1.0, pooled_height, pooled_width, 2, 3, 6, 7
        )


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_bad_spatial_scale(scale: float) -> None:
    input, rois = _input_rois()
    with pytest.raises(ERRORS, match="spatial_scale"):
        roi_pool(input, rois, 2, scale)
    with pytest.raises(ERRORS, match="spatial_scale"):
        detkit_forward(input, rois, scale, (2, 2))
    with pytest.raises(ERRORS, match="spatial_scale"):
        ROIPool(2, scale)


@pytest.mark.parametrize("num_boxes_tensors", [0, 1, 3])
def test_list_length_must_match_batch(num_boxes_tensors: int) -> None:
    input, _ = _input_rois(n=2)
    boxes = [torch.tensor([[0.0, 0, 3, 3]])] * num_boxes_tensors
    with pytest.raises(ValueError, match="2 images"):
        roi_pool(input, boxes, 2)


# ------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("rois_dtype", ["same", torch.float32], ids=dtype_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_autocast_cpu_reduced_precision(dtype: torch.dtype, rois_dtype) -> None:
    gen = torch.Generator().manual_seed(47)
    input = torch.randn(2, 3, 9, 8, generator=gen).to(dtype)
    rois = random_rois(gen, 2, 12, 9, 8, scale=0.5)
    rois = rois.to(dtype if rois_dtype == "same" else rois_dtype)
    grad = torch.randint(-3, 4, (12, 3, 2, 3), generator=gen).to(dtype)

    expected, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (2, 3), 0.5, grad.float()
    )
    leaf = input.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_pool(leaf, rois, (2, 3), 0.5)
        with torch.no_grad():
            inference = roi_pool(input, rois, (2, 3), 0.5)
    assert output.dtype == dtype and inference.dtype == dtype
    assert torch.equal(output, expected.to(dtype))
    assert torch.equal(inference, expected.to(dtype))
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert torch.equal(leaf.grad, expected_grad.to(dtype))


def test_autocast_cpu_leaves_float32_alone() -> None:
    gen = torch.Generator().manual_seed(53)
    input = torch.randn(1, 2, 7, 7, generator=gen)
    rois = random_rois(gen, 1, 5, 7, 7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_pool(input, rois, 3)
    assert output.dtype == torch.float32
    assert torch.equal(output, roi_pool(input, rois, 3))


# ---------------------------------------------------------------------------- CUDA


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


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


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
    _, cpu_grad = grad_through(roi_pool, input.cpu(), rois.cpu(), 3, 1.0, grad.cpu())
    assert torch.equal(first.cpu(), cpu_grad)  # the same order as the CPU
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
    input, rois = _input_rois()
    input = input.to(device=input_device, dtype=input_dtype)
    rois = rois[:, :columns].to(device=rois_device, dtype=rois_dtype)
    with pytest.raises(ERRORS, match=message):
        detkit_forward(input, rois, scale, (2, 2))
