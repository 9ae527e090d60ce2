"""The RoIAlign case table: one set of inputs for the value, gradient and opcheck tests.

Like pytorch/extension-cpp's ``sample_inputs``, every test of the op draws its
inputs from ``CASES`` (by name, so a failure names its case), and the smaller
cases in ``GRADCHECK_CASES`` and ``OPCHECK_CASES`` are also fed to
``torch.autograd.gradcheck`` and ``torch.library.opcheck``. A case is a feature
map and RoIs from a fixed seed plus the op's options; a *scenario* (random RoIs
at one scale, RoIs outside the map, ...) is run with several sampling ratios and
both ``aligned`` values, named ``scenario/sr=2/aligned``.

This module does not import detkit, so the reference's own tests can use it
before (and independently of) detkit's op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from roi_align_reference import (
    reference_roi_align_backward,
    reference_roi_align_forward,
    roi_geometry,
)
from roi_testing import Case, random_input, random_rois, rois_from, to_format
from torch import Tensor


@dataclass(frozen=True)
class AlignCase(Case):
    sampling_ratio: int = -1
    aligned: bool = False
    # torchvision's CPU forward lets a NaN/inf at cell (0, 0) into bins with samples
    # outside the map (see roi_align_reference.py): such cases are compared with the
    # reference only.
    finite: bool = True

    @property
    def torchvision_can_run(self) -> bool:
        """Whether torchvision computes this case, and so must agree with it.

        Besides non-finite input: an aligned RoI inverted on one axis only, with an
        adaptive grid, has a negative sample count (``ceil`` of a negative size on
        one axis, positive on the other), which torchvision's CPU kernel passes to
        ``std::vector`` as a size and fails on. Such a RoI has no samples: its
        output is 0.
        """
        if not self.finite:
            return False
        geometries = [roi_geometry(row, *self.options) for row in self.rois.tolist()]
        return all(g.grid_h * g.grid_w >= 0 for g in geometries)

    @property
    def options(self) -> tuple[float, int, int, int, bool]:
        """``(spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)``."""
        return (self.spatial_scale, *self.output_size, self.sampling_ratio, self.aligned)

    def kwargs(self) -> dict:
        """Keyword arguments of ``roi_align`` (detkit's and torchvision's alike)."""
        return {
            "output_size": self.output_size,
            "spatial_scale": self.spatial_scale,
            "sampling_ratio": self.sampling_ratio,
            "aligned": self.aligned,
        }

    def grad_output(self, dtype: torch.dtype, memory_format=torch.contiguous_format, device="cpu"):
        """A fixed random upstream gradient ``[K, C, h, w]`` for this case."""
        gen = torch.Generator().manual_seed(7)
        shape = (self.rois.shape[0], self.input.shape[1], *self.output_size)
        grad = torch.randn(shape, generator=gen, dtype=torch.float64)
        return to_format(grad.to(device=device, dtype=dtype), memory_format)


def detkit_forward(input: Tensor, rois: Tensor, case: AlignCase) -> Tensor:
    """detkit's raw forward op with the case's options (detkit._C must be loaded)."""
    return torch.ops.detkit.roi_align_forward(input, rois, *case.options)


def detkit_backward(grad: Tensor, rois: Tensor, case: AlignCase, input_shape) -> Tensor:
    """detkit's raw backward op with the case's options."""
    return torch.ops.detkit.roi_align_backward(grad, rois, *case.options, *input_shape)


def with_options(roi_align: Callable[..., Tensor], case: AlignCase) -> Callable[..., Tensor]:
    """``roi_align`` as ``pool(input, rois, output_size, spatial_scale)``, for ``grad_through``,
    with the case's sampling ratio and ``aligned``; works for detkit's and torchvision's."""

    def pool(input: Tensor, rois, output_size, spatial_scale) -> Tensor:
        return roi_align(input, rois, output_size, spatial_scale, case.sampling_ratio, case.aligned)

    return pool


# Scenarios: (input [N, C, H, W], rois [K, 5], output size, spatial scale), float64.
Scenario = Callable[[torch.Generator], tuple[Tensor, Tensor, tuple[int, int], float]]


def _random_scale_1(gen):
    return random_input(gen, (2, 3, 13, 17)), random_rois(gen, 2, 16, 13, 17), (5, 4), 1.0


def _random_scale_half(gen):
    rois = random_rois(gen, 2, 20, 11, 9, scale=0.5, integer=True)
    return random_input(gen, (2, 3, 11, 9)), rois, (3, 5), 0.5


def _random_scale_sixteenth(gen):
    rois = random_rois(gen, 3, 10, 10, 14, scale=1 / 16)
    return random_input(gen, (3, 2, 10, 14)), rois, (7, 7), 1 / 16


def _random_scale_0_7(gen):
    # 0.7 is not a float32 number: scaled corners differ in float32 and float64.
    rois = random_rois(gen, 2, 24, 12, 12, scale=0.7)
    return random_input(gen, (2, 2, 12, 12)), rois, (2, 3), 0.7


def _output_1x1(gen):
    return random_input(gen, (2, 3, 9, 8)), random_rois(gen, 2, 12, 9, 8), (1, 1), 1.0


def _outside(gen):
    h, w = 8, 10
    rows = [
        [0, -20, -20, -5, -5],  # fully above-left
        [0, 12, 2, 30, 6],  # fully right
        [1, 2, 9.5, 6, 40],  # fully below
        [1, -3, -3, 2, 2],  # straddles the top-left corner
        [0, 7, 5, 14, 12],  # straddles the bottom-right corner
        [1, -50, -50, 60, 60],  # covers the map and far beyond
        [0, -1, 3, 3, 3.5],  # a thin row, partly outside
        [1, w, 0, w + 3, h],  # starts right at the edge
        [0, w - 1, h - 1, w + 5, h + 5],  # only the last cell is inside
        [1, -2.5, 1, -0.5, 4],  # left of the map, within one cell of it
    ]
    return random_input(gen, (2, 2, h, w)), rois_from(rows), (3, 4), 1.0


def _degenerate(gen):
    rows = [
        [0, 3, 3, 3, 3],  # a point
        [0, 2, 1, 2, 6],  # x1 == x2
        [1, 0, 4, 7, 4],  # y1 == y2
        [1, 8, 6, 8, 6],  # the last cell
        [0, 9, 2, 9, 2],  # a point on the right border
        [0, 0, 0, 0, 0],  # the origin
        [1, 2.25, 3.75, 2.25, 3.75],  # a point between cells
    ]
    return random_input(gen, (2, 3, 7, 9)), rois_from(rows), (2, 3), 1.0


def _inverted(gen):
    rows = [
        [0, 6, 5, 1, 1],  # both axes inverted
        [1, 5, 1, 2, 6],  # x inverted
        [0, 1, 6, 6, 2],  # y inverted
        [1, 8, 6, 0, 0],
        [0, -2, -2, -9, -9],  # inverted and outside
        [1, 3.5, 3.5, 3.25, 3.25],  # inverted by less than a cell
    ]
    return random_input(gen, (2, 2, 7, 9)), rois_from(rows), (3, 3), 1.0


def _tiny(gen):
    rows = [
        [0, 2, 3, 2 + 1e-3, 3 + 1e-3],
        [0, 2.5, 1.5, 2.5 + 1e-6, 1.5 + 1e-6],  # around a point between cells
        [1, 0, 0, 1e-4, 1e-4],
        [1, 5.9999, 4.9999, 6, 5],  # at the last cell
        [0, 3.25, 1.5, 3.5, 1.625],  # a quarter by an eighth of a cell
        [1, -0.75, 2, -0.5, 2.5],  # left of the map, within one cell
    ]
    return random_input(gen, (2, 3, 6, 7)), rois_from(rows), (2, 2), 1.0


def _huge(gen):
    rows = [
        [0, -1000, -1000, 1000, 1000],
        [1, -5000, 2, 5000, 3],
        [0, 1, -3000, 4, 2000],
        [1, -1e4, -1e4, 1e4, 1e4],
    ]
    return random_input(gen, (2, 2, 6, 7)), rois_from(rows), (3, 2), 1.0


def _large_adaptive_grid(gen):
    # At scale 1/4 these span up to 80 cells: ceil(80 / 2) = 40 samples per bin and axis.
    rows = [[0, -100, -60, 220, 200], [1, 8, 4, 24, 180], [1, -20, -20, 300, 12]]
    return random_input(gen, (2, 2, 9, 11)), rois_from(rows), (2, 2), 0.25


def _near_borders(gen):
    # One sample per bin and axis, at the RoI's centre: rows whose samples fall just
    # before -1, at -1, at H (or W), just past it, and between H - 1 and H.
    h, w, eps = 5, 6, 2.0**-12
    rows = []
    for centre_y, centre_x in [
        (-1.0, 2.0),
        (-1.0 - eps, 2.0),
        (2.0, -1.0),
        (2.0, -1.0 - eps),
        (h, 3.0),
        (h + eps, 3.0),
        (1.0, w),
        (1.0, w + eps),
        (h - 0.5, w - 0.25),
        (h - 1.0, w - 1.0),
        (-0.5, -0.75),
        (h, w),
        (-1.0, -1.0),
    ]:
        rows.append([0, centre_x - 0.5, centre_y - 0.5, centre_x + 0.5, centre_y + 0.5])
    return random_input(gen, (1, 2, h, w)), rois_from(rows), (1, 1), 1.0


def _near_borders_aligned(gen):
    # The same sample positions once aligned's -0.5 shift is undone.
    input, rois, size, scale = _near_borders(gen)
    return input, torch.cat([rois[:, :1], rois[:, 1:] + 0.5], dim=1), size, scale


def _float32_grid_count(gen):
    # At scale 0.7, (19 - 9) * 0.7 / 7 is 1.0000001 in float32 (2 samples per bin and
    # axis) but 0.9999999999999999 in float64 (1 sample); likewise for the others.
    rows = [[0, 9, 9, 19, 19], [0, 13, 18, 23, 28], [0, 13, 18, 33, 38], [0, 26, 9, 46, 19]]
    return random_input(gen, (1, 2, 30, 30)), rois_from(rows), (7, 7), 0.7


def _special_values(gen):
    # NaN and infinities, at cell (0, 0) too, with RoIs that sample outside the map.
    input = torch.randint(-2, 3, (1, 3, 8, 8), generator=gen).double()
    input[0, :, 0, 0] = float("nan")
    input[0, 1, 0, 0] = float("inf")
    input[0, 0, 5, 5] = float("inf")
    input[0, 2, 6, 2] = -float("inf")
    input[0, 1, 3, 6] = float("nan")
    rows = [
        [0, -20, -20, -5, -5],  # fully outside: 0, whatever cell (0, 0) holds
        [0, 10, 10, 30, 30],
        [0, -4, -4, 4, 4],  # partly outside, reaching cell (0, 0)
        [0, 4, 4, 7, 7],  # inside, reaching the infinity at (5, 5)
        [0, 0.5, 5.5, 3.5, 7.5],
    ]
    rois = torch.cat([rois_from(rows), random_rois(gen, 1, 12, 8, 8)])
    return input, rois, (2, 2), 1.0


def _many_images(gen):
    rois = random_rois(gen, 4, 40, 9, 7, scale=0.5)
    return random_input(gen, (4, 2, 9, 7)), rois, (3, 3), 0.5


def _large_k(gen):
    rois = random_rois(gen, 2, 3000, 24, 24, scale=1 / 16, max_size=4)
    return random_input(gen, (2, 2, 24, 24)), rois, (2, 2), 1 / 16


def _wide_map(gen):
    return random_input(gen, (1, 2, 5, 31)), random_rois(gen, 1, 20, 5, 31), (3, 5), 1.0


def _tall_map(gen):
    return random_input(gen, (2, 2, 29, 4)), random_rois(gen, 2, 20, 29, 4), (5, 3), 1.0


def _one_cell_map(gen):
    return random_input(gen, (2, 3, 1, 1)), random_rois(gen, 2, 10, 1, 1, spread=2.0), (2, 2), 1.0


EVERY_OPTION = [(ratio, aligned) for aligned in (False, True) for ratio in (-1, 0, 1, 2, 3)]
EDGE_OPTIONS = [(-1, False), (-1, True), (2, False), (2, True)]

# name: (scenario, [(sampling_ratio, aligned), ...], finite)
SCENARIOS: dict[str, tuple[Scenario, list[tuple[int, bool]], bool]] = {
    "random-scale-1": (_random_scale_1, EVERY_OPTION, True),
    "random-scale-1/2": (_random_scale_half, EVERY_OPTION, True),
    "random-scale-1/16": (_random_scale_sixteenth, EVERY_OPTION, True),
    "random-scale-0.7": (_random_scale_0_7, EVERY_OPTION, True),
    "output-1x1": (_output_1x1, EDGE_OPTIONS, True),
    "outside": (_outside, [*EDGE_OPTIONS, (1, False), (3, True)], True),
    "degenerate": (_degenerate, [*EDGE_OPTIONS, (0, True), (1, True)], True),
    "inverted": (_inverted, [*EDGE_OPTIONS, (0, True), (3, True)], True),
    "tiny": (_tiny, EDGE_OPTIONS, True),
    "huge": (_huge, [(1, False), (2, True), (3, False)], True),
    "large-adaptive-grid": (_large_adaptive_grid, [(-1, False), (0, True)], True),
    "near-borders": (_near_borders, [(1, False)], True),
    "near-borders-aligned": (_near_borders_aligned, [(1, True)], True),
    "float32-grid-count": (_float32_grid_count, [(-1, False), (0, False)], True),
    "special-values": (_special_values, [(2, False), (-1, True)], False),
    "many-images": (_many_images, [(2, False), (-1, True)], True),
    "large-k": (_large_k, [(1, False), (1, True)], True),
    "wide-map": (_wide_map, EDGE_OPTIONS, True),
    "tall-map": (_tall_map, EDGE_OPTIONS, True),
    "one-cell-map": (_one_cell_map, EDGE_OPTIONS, True),
}


def case_name(scenario: str, sampling_ratio: int, aligned: bool) -> str:
    return f"{scenario}/sr={sampling_ratio}/{'aligned' if aligned else 'unaligned'}"


CASES: dict[str, tuple[str, int, bool]] = {
    case_name(scenario, ratio, aligned): (scenario, ratio, aligned)
    for scenario, (_, options, _) in SCENARIOS.items()
    for ratio, aligned in options
}
# Small enough for gradcheck's numerical Jacobian and for opcheck.
GRADCHECK_CASES = [
    "random-scale-1/2/sr=-1/unaligned",
    "random-scale-1/2/sr=2/aligned",
    "outside/sr=2/aligned",
    "degenerate/sr=2/unaligned",
    "inverted/sr=3/aligned",
    "tiny/sr=-1/aligned",
    "near-borders/sr=1/unaligned",
    "near-borders-aligned/sr=1/aligned",
    "one-cell-map/sr=2/aligned",
]
OPCHECK_CASES = [
    "random-scale-1/16/sr=0/aligned",
    "outside/sr=2/unaligned",
    "near-borders-aligned/sr=1/aligned",
]

# What the CUDA tests run: one or two cases of each scenario kind.
CUDA_CASES = [
    "random-scale-1/sr=-1/unaligned",
    "random-scale-1/16/sr=0/aligned",
    "random-scale-0.7/sr=3/aligned",
    "outside/sr=2/aligned",
    "degenerate/sr=0/aligned",
    "inverted/sr=-1/aligned",
    "tiny/sr=2/unaligned",
    "huge/sr=2/aligned",
    "large-adaptive-grid/sr=0/aligned",
    "near-borders/sr=1/unaligned",
    "float32-grid-count/sr=-1/unaligned",
    "special-values/sr=2/unaligned",
    "large-k/sr=1/aligned",
    "one-cell-map/sr=2/aligned",
]


def build_case(name: str) -> AlignCase:
    scenario, ratio, aligned = CASES[name]
    build, _, finite = SCENARIOS[scenario]
    input, rois, output_size, scale = build(torch.Generator().manual_seed(sum(map(ord, scenario))))
    return AlignCase(input, rois, output_size, scale, ratio, aligned, finite)


# torchvision agrees with these (see AlignCase.torchvision_can_run).
TORCHVISION_CASES = [name for name in CASES if build_case(name).torchvision_can_run]

_forward_cache: dict[tuple, Tensor] = {}
_backward_cache: dict[tuple, Tensor] = {}


def reference_forward(name: str, dtype: torch.dtype) -> Tensor:
    """The reference output of a case, computed once per (case, dtype)."""
    key = (name, dtype)
    if key not in _forward_cache:
        case = build_case(name)
        input, rois = case.cast(dtype)
        _forward_cache[key] = reference_roi_align_forward(input, rois, *case.options)
    return _forward_cache[key]


def reference_backward(name: str, dtype: torch.dtype) -> Tensor:
    """The reference input gradient of a case for ``case.grad_output(dtype)``, cached."""
    key = (name, dtype)
    if key not in _backward_cache:
        case = build_case(name)
        _, rois = case.cast(dtype)
        _backward_cache[key] = reference_roi_align_backward(
            case.grad_output(dtype), rois, *case.options, case.input.shape
        )
    return _backward_cache[key]
