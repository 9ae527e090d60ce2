"""Instances: the per-image container of a detector's inputs and outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class Instances:
    """An image size plus named per-instance fields of equal length.

    Fields are set and read as attributes (``inst.gt_boxes = Boxes(...)``); every field must
    support ``len`` and indexing (tensors, :class:`~detkit.structures.Boxes`, lists). Indexing an
    ``Instances`` indexes every field.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image the instances belong to."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("_fields", {})
        if name not in fields:
            raise AttributeError(f"Instances has no field {name!r}; fields: {sorted(fields)}")
        return fields[name]

    def set(self, name: str, value: Any) -> None:
        """Sets field ``name`` (as ``inst.name = value`` does); refused when its length is not
        the other fields'."""
        if self._fields:
            length, expected = _length(value), _length(next(iter(self._fields.values())))
            # a check torch.export keeps as a runtime assertion when lengths are data-dependent
            same = length == expected
            if isinstance(same, torch.Tensor):  # lengths traced by torch.jit are tensors
                same = bool(same)
            torch._check_value(
                same,
                lambda: f"Instances: field {name!r} has length {length}, the others {expected}",
            )
        self._fields[name] = value

    def get(self, name: str) -> Any:
        """Field ``name`` (as ``inst.name`` reads it; detectron2's call); a ``KeyError`` naming
        the fields there are when it is not one."""
        if name not in self._fields:
            raise KeyError(f"Instances has no field {name!r}; fields: {sorted(self._fields)}")
        return self._fields[name]

    def has(self, name: str) -> bool:
        """Whether field ``name`` is set."""
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return dict(self._fields)

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __getitem__(self, index) -> Instances:
        if isinstance(index, str):
            raise TypeError(
                f"Instances are indexed by position (int, slice, mask or indices), not by "
                f"{index!r}; a field is read as instances.{index} or instances.get({index!r})"
            )
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"Instances index {index} out of range for {len(self)}")
            position = index % len(self)  # keep a length-1 instance rather than a scalar
            index = slice(position, position + 1)
        result = Instances(self._image_size)
        for name, value in self._fields.items():
            result.set(name, value[index])
        return result

    def to(self, *args, **kwargs) -> Instances:
        result = Instances(self._image_size)
        for name, value in self._fields.items():
            result.set(name, value.to(*args, **kwargs) if hasattr(value, "to") else value)
        return result

    def __repr__(self) -> str:
        return (
            f"Instances(num_instances={len(self)}, image_height={self._image_size[0]}, "
            f"image_width={self._image_size[1]}, fields=[{', '.join(self._fields)}])"
        )

    @staticmethod
    def cat(instances: Sequence[Instances]) -> Instances:
        """Concatenates instances of one image size field by field."""
        if not instances:
            raise ValueError("Instances.cat needs at least one Instances")
        size = instances[0].image_size
        if any(i.image_size != size for i in instances):
            raise ValueError("Instances.cat: all instances must have the same image size")
        names = list(instances[0]._fields)
        if any(list(i._fields) != names for i in instances):
            raise ValueError("Instances.cat: all instances must have the same fields")
        result = Instances(size)
        for name in names:
            values = [i._fields[name] for i in instances]
            first = values[0]
            if isinstance(first, torch.Tensor):
                merged = torch.cat(values)
            elif hasattr(type(first), "cat"):
                merged = type(first).cat(values)
            elif isinstance(first, list):
                merged = [item for value in values for item in value]
            else:
                raise TypeError(
                    f"Instances.cat: cannot concatenate field {name!r} of {type(first)}"
                )
            result.set(name, merged)
        return result


def _length(value: Any) -> Any:
    """A field's length, read from its shape where it has one (a tensor, ``Boxes``), so it
    stays symbolic when traced."""
    tensor = getattr(value, "tensor", value)
    return tensor.shape[0] if hasattr(tensor, "shape") else len(value)
