"""A slow, independent reference for RoI max pooling (Girshick 2015, section 2.1).

This module is written from the layer's rules alone (the paper's layer, which is
also what ``torchvision.ops.roi_pool`` computes). It shares no code with detkit's
kernels and calls nothing from ``detkit``: it loops in Python over RoIs, bins and
the cells of each bin, with numpy taking care of nothing more than doing one step
for all channels at once. The rules, in the order they are applied:

1. Each corner is multiplied by ``spatial_scale`` in the RoI dtype (float32
   arithmetic for float32 RoIs, float64 for float64) and rounded half away from
   zero, like C's ``round`` (``0.5 -> 1``, ``-0.5 -> -1``, ``2.5 -> 3``), not like
   Python's ``round``, which rounds halves to even.
2. The RoI spans ``max(x2' - x1' + 1, 1)`` columns and ``max(y2' - y1' + 1, 1)``
   rows, so degenerate and inverted boxes become one cell.
3. ``bin_h = roi_h / pooled_height`` (a division in the compute dtype); bin row
   ``b`` covers ``[floor(b * bin_h), ceil((b + 1) * bin_h))`` (products in the
   compute dtype) after the RoI's first row, clipped to ``[0, H]``; columns alike.
4. An empty bin gives 0 and argmax -1.
5. Otherwise the running maximum starts at ``-FLT_MAX`` and a cell replaces it
   only when strictly greater, visiting cells row by row: ties go to the first
   cell in row-major order, NaN never wins, and a bin with no cell above
   ``-FLT_MAX`` keeps ``-FLT_MAX`` with argmax -1. The argmax is the in-plane
   index ``h * W + w``.
6. Backward adds every output's gradient to the input cell of its argmax, RoI by
   RoI and bin by bin (row-major), accumulating in the input dtype; -1 sends
   nothing.

The compute dtype of the geometry is float64 for float64 RoIs and float32 for
every other RoI dtype (float16/bfloat16 RoIs are widened to float32 first).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "FLT_MAX",
    "bin_bounds",
    "reference_roi_pool_backward",
    "reference_roi_pool_forward",
    "roi_geometry",
    "round_half_away_from_zero",
]

FLT_MAX = float(np.finfo(np.float32).max)  # 3.4028234663852886e38


def round_half_away_from_zero(value: float) -> int:
    """C's ``round``: the nearest integer, halves away from zero.

    Exact for every double: ``value - floor(value)`` has no rounding error, so
    unlike ``floor(value + 0.5)`` this never rounds 0.49999999999999994 up.
    """
    value = float(value)
    magnitude = abs(value)
    whole = math.floor(magnitude)
    rounded = whole + 1 if magnitude - whole >= 0.5 else whole
    return int(rounded) if value >= 0 else -int(rounded)


def _compute_dtype(rois_dtype: torch.dtype) -> type:
    return np.float64 if rois_dtype == torch.float64 else np.float32


def bin_bounds(
    roi_start: int, roi_length: int, bins: int, limit: int, compute_dtype: type
) -> list[tuple[int, int]]:
    """``[start, end)`` of every bin along one axis, clipped to ``[0, limit]``."""
    bin_size = compute_dtype(roi_length) / compute_dtype(bins)
    bounds = []
    for b in range(bins):
        start = math.floor(compute_dtype(b) * bin_size) + roi_start
        end = math.ceil(compute_dtype(b + 1) * bin_size) + roi_start
        bounds.append((min(max(start, 0), limit), min(max(end, 0), limit)))
    return bounds


def roi_geometry(
    roi: list[float] | tuple[float, ...],
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    height: int,
    width: int,
    compute_dtype: type = np.float32,
) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
    """The batch index and the clipped bin rows and columns of one RoI row."""
    batch, x1, y1, x2, y2 = roi
    if not (float(batch).is_integer()):
        raise AssertionError(f"the reference needs an integer batch index, got {batch}")
    scale = compute_dtype(spatial_scale)
    start_w, start_h, end_w, end_h = (
        round_half_away_from_zero(compute_dtype(c) * scale) for c in (x1, y1, x2, y2)
    )
    roi_width = max(end_w - start_w + 1, 1)
    roi_height = max(end_h - start_h + 1, 1)
    rows = bin_bounds(start_h, roi_height, pooled_height, height, compute_dtype)
    cols = bin_bounds(start_w, roi_width, pooled_width, width, compute_dtype)
    return int(batch), rows, cols


def reference_roi_pool_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, argmax)`` of RoI max pooling, both NCHW-contiguous on the CPU.

    ``input`` is ``[N, C, H, W]`` float32 or float64 (any layout, any device),
    ``rois`` is ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``.
    """
    if input.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the reference pools float32/float64 only, got {input.dtype}")
    features = input.detach().cpu().numpy()
    compute_dtype = _compute_dtype(rois.dtype)
    roi_rows = rois.detach().cpu().double().tolist()
    _, channels, height, width = features.shape
    num_rois = len(roi_rows)
    output = np.zeros((num_rois, channels, pooled_height, pooled_width), dtype=features.dtype)
    argmax = np.full((num_rois, channels, pooled_height, pooled_width), -1, dtype=np.int32)
    for k, roi in enumerate(roi_rows):
        batch, rows, cols = roi_geometry(
            roi, spatial_scale, pooled_height, pooled_width, height, width, compute_dtype
        )
        image = features[batch]  # [C, H, W]
        for ph, (h_start, h_end) in enumerate(rows):
            for pw, (w_start, w_end) in enumerate(cols):
                if h_end <= h_start or w_end <= w_start:
                    continue  # empty bin: 0 and -1, as initialised
                best = np.full(channels, -FLT_MAX, dtype=features.dtype)
                best_index = np.full(channels, -1, dtype=np.int32)
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        cell = image[:, h, w]
                        greater = cell > best  # False for NaN: NaN never wins
                        best = np.where(greater, cell, best)
                        best_index = np.where(greater, h * width + w, best_index)
                output[k, :, ph, pw] = best
                argmax[k, :, ph, pw] = best_index
    return torch.from_numpy(output), torch.from_numpy(argmax)


def reference_roi_pool_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    argmax: torch.Tensor,
    input_shape: tuple[int, int, int, int] | torch.Size,
) -> torch.Tensor:
    """The input gradient ``[N, C, H, W]`` (NCHW-contiguous, on the CPU).

    Every output's gradient goes to its argmax cell, in the order RoI, then bin
    row, then bin column, and is accumulated in the gradient's dtype (so float32
    sums round like a serial float32 loop).
    """
    grad = grad_output.detach().cpu().numpy()
    index = argmax.detach().cpu().numpy()
    batches = [int(b) for b in rois[:, 0].detach().cpu().double().tolist()]
    num_images, channels, height, width = input_shape
    grad_input = np.zeros((num_images, channels, height * width), dtype=grad.dtype)
    channel_ids = np.arange(channels)
    num_rois, _, pooled_height, pooled_width = grad.shape
    for k in range(num_rois):
        target = grad_input[batches[k]]  # [C, H * W], a view
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                cells = index[k, :, ph, pw]
                hit = cells >= 0
                # One cell per channel, so no element is named twice in one step.
                target[channel_ids[hit], cells[hit]] += grad[k, hit, ph, pw]
    return torch.from_numpy(grad_input.reshape(num_images, channels, height, width))
