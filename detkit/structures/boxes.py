"""Boxes: an ``[N, 4]`` tensor of absolute XYXY boxes with the operations detection needs, and
the box modes of detectron2's data."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

BoxLike = TypeVar("BoxLike", list, tuple, np.ndarray, Tensor)


class BoxMode(IntEnum):
    """How a box's four numbers are written, with detectron2's values, so that its dataset
    dicts (``bbox_mode``) and proposal files read as they are. detkit works in ``XYXY_ABS``;
    ``XYWH_ABS`` is converted where data comes in; the relative and rotated modes are refused.
    """

    XYXY_ABS = 0  # (x1, y1, x2, y2) in pixels
    XYWH_ABS = 1  # (x, y, width, height) in pixels, as COCO writes boxes
    XYXY_REL = 2  # (x1, y1, x2, y2) as fractions of the image's size
    XYWH_REL = 3
    XYWHA_ABS = 4  # (x centre, y centre, width, height, angle): a rotated box

    @classmethod
    def absolute(cls, value: object) -> BoxMode:
        """``value`` (a whole number, or an enum such as detectron2's ``BoxMode``) as
        ``XYXY_ABS`` or ``XYWH_ABS``; any other mode or value is a one-line ``ValueError``."""
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            value = repr(value)
        elif int(value) in cls._value2member_map_:
            mode = cls(int(value))
            if mode in (cls.XYXY_ABS, cls.XYWH_ABS):
                return mode
            raise ValueError(
                f"bbox_mode {int(mode)} ({mode.name}) is not supported: detkit reads absolute "
                "boxes, XYXY_ABS (0) or XYWH_ABS (1); convert the boxes first"
            )
        raise ValueError(
            f"bbox_mode {value} is not one of detectron2's box modes; detkit reads XYXY_ABS (0) "
            "and XYWH_ABS (1)"
        )

    @staticmethod
    def convert(box: BoxLike, from_mode: int, to_mode: int) -> BoxLike:
        """``box`` written in ``from_mode`` rewritten in ``to_mode`` (``XYXY_ABS`` or
        ``XYWH_ABS``), as detectron2's ``BoxMode.convert``: a list or tuple of four numbers, or
        an ``[..., 4]`` numpy array or tensor, returned as a new one of the same kind (``box``
        itself when the modes are equal)."""
        from_mode, to_mode = BoxMode.absolute(from_mode), BoxMode.absolute(to_mode)
        if from_mode == to_mode:
            return box
        sign = 1 if from_mode == BoxMode.XYWH_ABS else -1  # x2 = x + w, or w = x2 - x1
        if isinstance(box, list | tuple):
            x, y, third, fourth = box
            return type(box)([x, y, third + sign * x, fourth + sign * y])
        converted = box.clone() if isinstance(box, Tensor) else np.array(box, copy=True)
        converted[..., 2:] += sign * box[..., :2]
        return converted


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
