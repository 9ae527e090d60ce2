"""The RoIPool test cases, their reference results, and the two ops under comparison.

Every case is a small feature map and a set of RoIs built from a fixed seed
(``build_case``); the value, gradient and CUDA tests all draw from this table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from roi_pool_reference import reference_roi_pool_forward
from roi_testing import Case, random_input, random_rois, rois_from
from torch import Tensor


def detkit_forward(
    input: Tensor, rois: Tensor, scale: float, output_size: tuple[int, int], with_argmax=True
) -> tuple[Tensor, Tensor]:
    return torch.ops.detkit.roi_pool_forward(input, rois, scale, *output_size, with_argmax)


def torchvision_forward(
    input: Tensor, rois: Tensor, scale: float, output_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    return torch.ops.torchvision.roi_pool(input, rois, scale, *output_size)


def _case_random_scale_1(gen):
    return Case(random_input(gen, (2, 3, 13, 17)), random_rois(gen, 2, 40, 13, 17), (7, 7), 1.0)


def _case_random_scale_half(gen):
    rois = random_rois(gen, 2, 40, 11, 9, scale=0.5, integer=True)
    return Case(random_input(gen, (2, 3, 11, 9)), rois, (3, 5), 0.5)


def _case_random_scale_sixteenth(gen):
    rois = random_rois(gen, 3, 40, 10, 14, scale=1 / 16)
    return Case(random_input(gen, (3, 2, 10, 14)), rois, (14, 6), 1 / 16)


def _case_random_scale_0_7(gen):
    # 0.7 is not a float32 number: the scaled corners round differently in
    # float32 and float64 arithmetic now and then.
    rois = random_rois(gen, 2, 60, 12, 12, scale=0.7, integer=True)
    return Case(random_input(gen, (2, 2, 12, 12)), rois, (2, 3), 0.7)


def _case_one_by_one_output(gen):
    return Case(random_input(gen, (2, 3, 9, 8)), random_rois(gen, 2, 20, 9, 8), (1, 1), 1.0)


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
    return Case(random_input(gen, (2, 2, h, w)), rois_from(rows), (3, 4), 1.0)


def _case_degenerate(gen):
    rows = [
        [0, 3, 3, 3, 3],  # one cell
        [0, 2, 1, 2, 6],  # x1 == x2
        [1, 0, 4, 7, 4],  # y1 == y2
        [1, 8, 6, 8, 6],  # the last cell
        [0, 9, 2, 9, 2],  # one cell just outside
        [0, 0.4, 0.3, 0.2, 0.1],  # rounds to one cell
    ]
    return Case(random_input(gen, (2, 3, 7, 9)), rois_from(rows), (2, 3), 1.0)


def _case_inverted(gen):
    rows = [
        [0, 6, 5, 1, 1],  # both axes inverted
        [1, 5, 1, 2, 6],  # x inverted
        [0, 1, 6, 6, 2],  # y inverted
        [1, 8, 6, 0, 0],
        [0, -2, -2, -9, -9],  # inverted and outside
    ]
    return Case(random_input(gen, (2, 2, 7, 9)), rois_from(rows), (3, 3), 1.0)


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
    return Case(random_input(gen, (2, 3, 9, 8)), rois_from(rows), (3, 2), 1 / 16)


def _case_half_points_unscaled(gen):
    rows = [
        [0, 0.5, 0.5, 2.5, 3.5],
        [0, -0.5, -0.5, 1.5, 1.5],
        [1, 2.5, 0.5, 4.5, 2.5],
        [1, -1.5, 1.5, 0.5, 5.5],
    ]
    return Case(random_input(gen, (2, 2, 7, 6)), rois_from(rows), (2, 2), 1.0)


def _case_float32_corner_rounding(gen):
    # In float32, 45 * 0.7 is exactly 31.5 (-> 32) and 85 * 0.7 is 59.5 (-> 60);
    # in float64 they are 31.499... (-> 31) and 59.499... (-> 59). And 5 * 0.7 is
    # 3.5 in float32, 3.4999999 when the same float32 numbers are multiplied in float64.
    rows = [[0, 5, 5, 45, 85], [0, 45, 5, 85, 45], [0, 15, 25, 25, 45], [0, 85, 85, 88, 88]]
    return Case(random_input(gen, (1, 2, 64, 64)), rois_from(rows), (3, 3), 0.7)


def _case_float32_bins_14(gen):
    # Rows 1..62 (62 cells) in 14 bins: float32 puts bin 7's start at row 30
    # (float64: 31); columns 1..58 in 14 bins: bin 6 ends at 29 (float64: 30).
    rows = [[0, 1, 1, 58, 62], [0, 2, 0, 59, 61]]
    return Case(random_input(gen, (1, 2, 64, 64)), rois_from(rows), (14, 14), 1.0)


def _case_float32_bins_13(gen):
    # 7 cells in 13 bins: in float32 the last bin ends at 8, one cell past the RoI.
    rows = [[0, 10, 10, 16, 16], [0, 3, 4, 16, 10]]
    return Case(random_input(gen, (1, 2, 24, 24)), rois_from(rows), (13, 13), 1.0)


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
    return Case(random_input(gen, (4, 2, 9, 7)), rois, (7, 7), 0.5)


def _case_large_k(gen):
    rois = random_rois(gen, 2, 3000, 24, 24, scale=1 / 16, max_size=4)
    return Case(random_input(gen, (2, 2, 24, 24)), rois, (2, 2), 1 / 16)


def _case_wide_map(gen):
    return Case(random_input(gen, (1, 2, 5, 31)), random_rois(gen, 1, 30, 5, 31), (3, 5), 1.0)


def _case_tall_map(gen):
    return Case(random_input(gen, (2, 2, 29, 4)), random_rois(gen, 2, 30, 29, 4), (5, 3), 1.0)


def _case_one_cell_map(gen):
    return Case(
        random_input(gen, (2, 3, 1, 1)), random_rois(gen, 2, 10, 1, 1, spread=2.0), (2, 2), 1.0
    )


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
