"""Assigns each proposal to its best-overlapping ground-truth box and an IoU band."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Matcher:
    """Labels proposals by their highest IoU with any ground-truth box.

    ``thresholds`` split ``[0, 1]`` into bands and ``labels`` name each band: Fast R-CNN uses
    ``thresholds=[0.1, 0.5]``, ``labels=[-1, 0, 1]``: below 0.1 ignored (-1), ``[0.1, 0.5)``
    background (0), ``>= 0.5`` foreground (1). Each band includes its lower threshold.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int]) -> None:
        thresholds = [float(t) for t in thresholds]
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher: {len(thresholds)} thresholds make {len(thresholds) + 1} bands, "
                f"but {len(labels)} labels were given"
            )
        if thresholds != sorted(thresholds) or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"Matcher: thresholds must rise within [0, 1], got {thresholds}")
        self.thresholds = [-float("inf"), *thresholds, float("inf")]
        self.labels = list(labels)

    def __call__(self, iou: Tensor) -> tuple[Tensor, Tensor]:
        """For an ``[M ground truth, N proposals]`` IoU matrix, returns ``(matches, labels)``:
        the index of each proposal's best ground-truth box and the label of its band."""
        if iou.shape[0] == 0:  # no ground truth: every proposal has IoU 0
            best = iou.new_zeros(iou.shape[1])
            matches = torch.zeros(iou.shape[1], dtype=torch.int64, device=iou.device)
        else:
            best, matches = iou.max(dim=0)
        labels = torch.empty_like(matches, dtype=torch.int8)
        bands = zip(self.labels, self.thresholds[:-1], self.thresholds[1:], strict=True)
        for label, low, high in bands:
            labels[(best >= low) & (best < high)] = label
        return matches, labels
