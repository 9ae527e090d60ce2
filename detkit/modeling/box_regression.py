"""Box regression targets of Fast R-CNN (paper §2.3, the R-CNN parameterisation)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Largest log-scale a delta may apply, so exp() cannot overflow: a box grows at most 1000/16x.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """Encodes a target box relative to a source box as ``(dx, dy, dw, dh)`` and back.

    ``dx = wx * (x_t - x_s) / w_s``, ``dw = ww * log(w_t / w_s)`` (likewise y, h), with centres and
    sizes of continuous XYXY boxes (width ``x2 - x1``). The weights ``(10, 10, 5, 5)`` equal the
    paper's normalisation of the targets by standard deviations ``(0.1, 0.1, 0.2, 0.2)``.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP) -> None:
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform: 4 weights (wx, wy, ww, wh) needed, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """``[N, 4]`` deltas that turn each ``src_boxes[i]`` into ``target_boxes[i]``."""
        src_ctr, src_size = _centres_and_sizes(src_boxes)
        tgt_ctr, tgt_size = _centres_and_sizes(target_boxes)
        wx, wy, ww, wh = self.weights
        weights_ctr = src_ctr.new_tensor([wx, wy])
        weights_size = src_ctr.new_tensor([ww, wh])
        d_ctr = weights_ctr * (tgt_ctr - src_ctr) / src_size
        d_size = weights_size * torch.log(tgt_size / src_size)
        return torch.cat([d_ctr, d_size], dim=1)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Applies ``deltas`` ``[N, 4k]`` (k per row, e.g. one per class) to ``boxes`` [N, 4]."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        ctr, size = _centres_and_sizes(boxes)
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        x = dx * size[:, :1] + ctr[:, :1]
        y = dy * size[:, 1:] + ctr[:, 1:]
        w = torch.exp(dw) * size[:, :1]
        h = torch.exp(dh) * size[:, 1:]
        out = torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=2)
        return out.reshape(deltas.shape)


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    sizes = boxes[:, 2:] - boxes[:, :2]
    return boxes[:, :2] + 0.5 * sizes, sizes
