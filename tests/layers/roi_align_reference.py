"""A slow, independent reference for RoIAlign (He et al. 2017, Mask R-CNN, section 3).

Written from the op's rules alone (the semantics of ``torchvision.ops.roi_align``,
listed below); it shares no code with detkit's kernels and calls nothing from
``detkit``. It loops in Python over RoIs, bins and samples, and numpy does no
more than one step for all channels at once. Every number is computed in the
input's dtype (numpy ``float32`` scalars for float32 input, so each operation
rounds like a float32 C++ expression) and in the order given here, so the
results can be compared exactly with kernels that follow the same order.

For one RoI row ``(batch_index, x1, y1, x2, y2)`` and an ``h x w`` output:

1. ``start_x = x1 * spatial_scale - offset`` (``offset`` is 0.5 when ``aligned``,
   else 0), ``end_x = x2 * spatial_scale - offset``; y likewise.
2. ``roi_width = end_x - start_x``, forced to at least 1 only when not
   ``aligned``; ``bin_width = roi_width / w``; y likewise.
3. Samples per bin and axis: ``sampling_ratio`` when it is positive, else
   ``ceil(roi_width / w)`` (adaptive; zero or negative for an empty or inverted
   aligned RoI, which then has no samples).
4. Sample ``k`` of bin column ``j`` sits at
   ``x = start_x + j * bin_width + (k + 0.5) * bin_width / grid_w``, evaluated as
   ``(start_x + (j * bin_width)) + (((k + 0.5) * bin_width) / grid_w)``.
5. A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes 0.
   Otherwise ``y`` is clamped to ``>= 0``, ``y_low = int(y)``, and when
   ``y_low >= H - 1`` both ``y_low`` and ``y_high`` are ``H - 1`` and ``y`` becomes
   ``H - 1``, else ``y_high = y_low + 1``; x likewise. With ``ly = y - y_low``,
   ``hy = 1 - ly`` (and ``lx``, ``hx``), the weights of the cells
   ``(y_low, x_low)``, ``(y_low, x_high)``, ``(y_high, x_low)``, ``(y_high, x_high)``
   are ``hy * hx``, ``hy * lx``, ``ly * hx``, ``ly * lx``, and the sample's value
   is ``((w1 * v1 + w2 * v2) + w3 * v3) + w4 * v4``.
6. A bin's value is the running sum of its samples (row of samples by row,
   starting from 0) divided by ``max(grid_h * grid_w, 1)``.
7. Backward: for every RoI, bin (row-major) and sample (row-major), in that
   order, the four cells of the sample receive ``(g * w_i) / count`` in the order
   of step 5, ``g`` being the bin's gradient; sums are in the gradient's dtype.

The one place where this differs from torchvision's CPU forward: torchvision
multiplies the zero weights of an outside sample by the cell at (0, 0), so a
NaN or infinity there leaks into such bins; here (as in detkit) an outside
sample contributes exactly 0. With finite input the two agree bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "RoIGeometry",
    "Sample",
    "bilinear_sample",
    "reference_roi_align_backward",
    "reference_roi_align_forward",
    "roi_geometry",
    "sample_coordinate",
]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@dataclass(frozen=True)
class RoIGeometry:
    """Where one RoI's bins start and how they are sampled (step 1 to 3)."""

    batch: int
    start_y: np.floating
    start_x: np.floating
    bin_height: np.floating
    bin_width: np.floating
    grid_h: int
    grid_w: int
    count: np.floating  # max(grid_h * grid_w, 1), in the compute dtype


@dataclass(frozen=True)
class Sample:
    """The four cells and weights of one bilinear sample inside the map (step 5)."""

    y_low: int
    y_high: int
    x_low: int
    x_high: int
    weights: tuple[np.floating, np.floating, np.floating, np.floating]

    def cells(self) -> tuple[tuple[int, int], ...]:
        return (
            (self.y_low, self.x_low),
            (self.y_low, self.x_high),
            (self.y_high, self.x_low),
            (self.y_high, self.x_high),
        )


def _numpy_dtype(dtype: torch.dtype) -> type:
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(f"the reference computes in float32/float64 only, got {dtype}")
    return _NUMPY_DTYPES[dtype]


def roi_geometry(
    roi: list[float] | tuple[float, ...],
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    compute_dtype: type = np.float32,
) -> RoIGeometry:
    """Steps 1 to 3 for one RoI row, in ``compute_dtype`` (np.float32 or np.float64)."""
    t = compute_dtype
    batch, x1, y1, x2, y2 = roi
    if not float(batch).is_integer():
        raise AssertionError(f"the reference needs an integer batch index, got {batch}")
    scale = t(spatial_scale)
    offset = t(0.5) if aligned else t(0.0)
    start_x = t(x1) * scale - offset
    start_y = t(y1) * scale - offset
    end_x = t(x2) * scale - offset
    end_y = t(y2) * scale - offset
    roi_width = end_x - start_x
    roi_height = end_y - start_y
    if not aligned:
        roi_width = max(roi_width, t(1.0))
        roi_height = max(roi_height, t(1.0))
    bin_height = roi_height / t(pooled_height)
    bin_width = roi_width / t(pooled_width)
    if sampling_ratio > 0:
        grid_h = grid_w = sampling_ratio
    else:
        grid_h = math.ceil(roi_height / t(pooled_height))
        grid_w = math.ceil(roi_width / t(pooled_width))
    count = t(max(grid_h * grid_w, 1))
    return RoIGeometry(int(batch), start_y, start_x, bin_height, bin_width, grid_h, grid_w, count)


def sample_coordinate(
    start: np.floating, bin_index: int, bin_size: np.floating, k: int, grid: int
) -> np.floating:
    """Step 4: where sample ``k`` of bin ``bin_index`` lies along one axis."""
    t = type(start)
    return start + t(bin_index) * bin_size + t(k + 0.5) * bin_size / t(grid)


def _axis(value: np.floating, size: int) -> tuple[int, int, np.floating]:
    """Clamping along one axis of step 5: ``(low, high, value)`` for an inside sample."""
    t = type(value)
    if value <= 0:
        value = t(0.0)
    low = int(value)
    if low >= size - 1:
        low = high = size - 1
        value = t(low)
    else:
        high = low + 1
    return low, high, value


def bilinear_sample(y: np.floating, x: np.floating, height: int, width: int) -> Sample | None:
    """Step 5: the cells and weights of the sample at ``(y, x)``, ``None`` outside."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return None
    t = type(y)
    y_low, y_high, y = _axis(y, height)
    x_low, x_high, x = _axis(x, width)
    ly = y - t(y_low)
    lx = x - t(x_low)
    hy = t(1.0) - ly
    hx = t(1.0) - lx
    return Sample(y_low, y_high, x_low, x_high, (hy * hx, hy * lx, ly * hx, ly * lx))


def _bin_samples(geometry: RoIGeometry, ph: int, pw: int, height: int, width: int):
    """Every sample of bin ``(ph, pw)`` in row-major order (``None`` for one outside)."""
    for iy in range(geometry.grid_h):
        y = sample_coordinate(geometry.start_y, ph, geometry.bin_height, iy, geometry.grid_h)
        for ix in range(geometry.grid_w):
            x = sample_coordinate(geometry.start_x, pw, geometry.bin_width, ix, geometry.grid_w)
            yield bilinear_sample(y, x, height, width)


def _rows(rois: torch.Tensor) -> list[list[float]]:
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"the reference takes rois as [K, 5], got {tuple(rois.shape)}")
    return rois.detach().cpu().double().tolist()


def reference_roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """``Tensor[K, C, pooled_height, pooled_width]`` (NCHW-contiguous, on the CPU).

    ``input`` is ``[N, C, H, W]`` float32 or float64 (any layout or device);
    ``rois`` is ``[K, 5]``, its values read exactly and used in the input dtype.
    """
    t = _numpy_dtype(input.dtype)
    features = input.detach().cpu().numpy()
    _, channels, height, width = features.shape
    rows = _rows(rois)
    output = np.zeros((len(rows), channels, pooled_height, pooled_width), dtype=t)
    for k, roi in enumerate(rows):
        geometry = roi_geometry(
            roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, t
        )
        image = features[geometry.batch]  # [C, H, W]
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                total = np.zeros(channels, dtype=t)
                for sample in _bin_samples(geometry, ph, pw, height, width):
                    if sample is None:
                        continue  # contributes exactly 0, whatever the map holds
                    (c1, c2, c3, c4), (w1, w2, w3, w4) = sample.cells(), sample.weights
                    value = w1 * image[:, c1[0], c1[1]] + w2 * image[:, c2[0], c2[1]]
                    value = value + w3 * image[:, c3[0], c3[1]]
                    value = value + w4 * image[:, c4[0], c4[1]]
                    total = total + value
                output[k, :, ph, pw] = total / geometry.count
    return torch.from_numpy(output)


def reference_roi_align_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    input_shape: tuple[int, int, int, int] | torch.Size,
) -> torch.Tensor:
    """The input gradient ``[N, C, H, W]`` (NCHW-contiguous, on the CPU), step 7."""
    t = _numpy_dtype(grad_output.dtype)
    grad = grad_output.detach().cpu().numpy()
    num_images, channels, height, width = input_shape
    rows = _rows(rois)
    if grad.shape != (len(rows), channels, pooled_height, pooled_width):
        raise ValueError(f"grad_output has shape {grad.shape}, which does not fit the RoIs")
    grad_input = np.zeros((num_images, channels, height, width), dtype=t)
    for k, roi in enumerate(rows):
        geometry = roi_geometry(
            roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, t
        )
        target = grad_input[geometry.batch]  # [C, H, W], a view
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                bin_grad = grad[k, :, ph, pw]
                for sample in _bin_samples(geometry, ph, pw, height, width):
                    if sample is None:
                        continue
                    for (y, x), weight in zip(sample.cells(), sample.weights, strict=True):
                        # One cell at a time: a clamped sample names a cell twice.
                        target[:, y, x] += bin_grad * weight / geometry.count
    return torch.from_numpy(grad_input)
