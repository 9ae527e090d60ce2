"""Boxes: an ``[N, 4]`` tensor of absolute XYXY boxes with the operations detection needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou


class Boxes:
    """``N`` boxes as ``(x1, y1, x2, y2)`` in continuous pixel coordinates (width = x2 - x1).

    The tensor is kept as ``.tensor``; indexing returns ``Boxes`` that share its memory.
    """

    def __init__(self, tensor: Tensor) -> None:
        if not isinstance(tensor, Tensor):
            tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.dim() != 2 and tensor.numel() == 0:  # any empty shape, e.g. torch.tensor([])
            tensor = tensor.reshape(0, 4)
        if not tensor.is_floating_point():
            tensor = tensor.float()
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes: expected an [N, 4] tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index) -> Boxes:
        selected = self.tensor[index]
        return Boxes(selected.view(1, 4) if selected.dim() == 1 else selected)

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> Boxes:
        return Boxes(self.tensor.to(*args, **kwargs))

    def clone(self) -> Boxes:
        return Boxes(self.tensor.clone())

    def area(self) -> Tensor:
        """``[N]`` areas; inverted boxes have area 0."""
        widths = (self.tensor[:, 2] - self.tensor[:, 0]).clamp(min=0)
        heights = (self.tensor[:, 3] - self.tensor[:, 1]).clamp(min=0)
        return widths * heights

    def clip(self, image_size: tuple[int, int]) -> None:
        """Clips the boxes, in place, to an image of ``(height, width)``."""
        height, width = image_size
        self.tensor[:, 0::2] = self.tensor[:, 0::2].clamp(min=0, max=width)
        self.tensor[:, 1::2] = self.tensor[:, 1::2].clamp(min=0, max=height)

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """``[N]`` mask of the boxes whose width and height both exceed ``threshold``."""
        widths = self.tensor[:, 2] - self.tensor[:, 0]
        heights = self.tensor[:, 3] - self.tensor[:, 1]
        return (widths > threshold) & (heights > threshold)

    @staticmethod
    def cat(boxes: Sequence[Boxes]) -> Boxes:
        if not boxes:
            return Boxes(torch.empty(0, 4))
        return Boxes(torch.cat([b.tensor for b in boxes], dim=0))


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """``[N, M]`` IoU of every pair (torchvision's ``box_iou``)."""
    return box_iou(boxes1.tensor, boxes2.tensor)
