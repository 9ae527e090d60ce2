"""Assigns each proposal to its best-overlapping ground-truth box and an IoU band."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def band_problems(
    thresholds: Sequence[float],
    labels: Sequence[int],
    names: tuple[str, str] = ("thresholds", "labels"),
) -> list[str]:
    """Why ``thresholds`` and ``labels`` do not make a :class:`Matcher`'s IoU bands, one message
    per problem naming them as ``names`` gives (the arguments; ``check_config`` gives the config
    keys); empty when they do."""
    thresholds, labels = [float(t) for t in thresholds], list(labels)
    (threshold_name, label_name), bands = names, len(thresholds) + 1
    problems = []
    if len(labels) != bands:
        example = (  # the last part of each name: IOU_THRESHOLDS, or thresholds itself
            f"{threshold_name.rsplit('.', 1)[-1]}: [0.1, 0.5] with "
            f"{label_name.rsplit('.', 1)[-1]}: [-1, 0, 1]"
        )
        problems.append(
            f"{threshold_name} {thresholds} make {bands} IoU bands but {label_name} {labels} "
            f"name {len(labels)}; give one label per band (e.g. {example})"
        )
    if thresholds != sorted(thresholds) or not all(0.0 <= t <= 1.0 for t in thresholds):
        problems.append(f"{threshold_name} must rise within [0, 1], got {thresholds}")
    if not set(labels) <= {-1, 0, 1}:
        problems.append(
            f"{label_name} must be -1 (ignored), 0 (background) or 1 (foreground), got {labels}"
        )
    return problems


class Matcher:
    """Labels proposals by their highest IoU with any ground-truth box.

    ``thresholds`` split ``[0, 1]`` into bands and ``labels`` name each band: Fast R-CNN uses
    ``thresholds=[0.1, 0.5]``, ``labels=[-1, 0, 1]``: below 0.1 ignored (-1), ``[0.1, 0.5)``
    background (0), ``>= 0.5`` foreground (1). Each band includes its lower threshold.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int]) -> None:
        problems = band_problems(thresholds, labels)
        if problems:
            raise ValueError("Matcher: " + "; ".join(problems))
        self.thresholds = [-float("inf"), *(float(t) for t in thresholds), float("inf")]
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
