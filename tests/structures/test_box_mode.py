"""detkit.structures.BoxMode: detectron2's box modes, converted by hand-computed values."""

from __future__ import annotations

import enum

import numpy as np
import pytest
import torch

from detkit.structures import BoxMode


def test_values_are_detectron2s() -> None:
    assert [(mode.name, int(mode)) for mode in BoxMode] == [
        ("XYXY_ABS", 0),
        ("XYWH_ABS", 1),
        ("XYXY_REL", 2),
        ("XYWH_REL", 3),
        ("XYWHA_ABS", 4),
    ]


def test_convert_between_absolute_modes_keeps_the_container() -> None:
    xyxy = BoxMode.convert([10, 20, 40, 30], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert xyxy == [10, 20, 50, 50]
    assert BoxMode.convert((10.0, 20.0, 50.0, 50.0), 0, 1) == (10.0, 20.0, 40.0, 30.0)
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 6.0]], np.float32)
    got = BoxMode.convert(rows, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert got.dtype == np.float32 and got.tolist() == [[1, 2, 4, 6], [0, 0, 5, 6]]
    assert rows[0].tolist() == [1, 2, 3, 4]  # the input is left as it was
    tensor = BoxMode.convert(torch.tensor([[1.0, 2.0, 4.0, 6.0]]), 0, 1)
    assert tensor.tolist() == [[1, 2, 3, 4]]
    assert BoxMode.convert(rows, 1, 1) is rows


@pytest.mark.parametrize("mode", ["XYXY_REL", "XYWH_REL", "XYWHA_ABS"])
def test_relative_and_rotated_modes_are_refused_in_one_line(mode: str) -> None:
    with pytest.raises(ValueError, match=rf"bbox_mode {BoxMode[mode].value} \({mode}\) is not"):
        BoxMode.convert([0, 0, 1, 1], BoxMode[mode], BoxMode.XYXY_ABS)


def test_absolute_accepts_detectron2s_enum_and_refuses_the_rest() -> None:
    class Detectron2BoxMode(enum.IntEnum):  # detectron2.structures.BoxMode, as pickled
        XYXY_ABS = 0
        XYWH_ABS = 1
        XYXY_REL = 2

    assert BoxMode.absolute(Detectron2BoxMode.XYWH_ABS) is BoxMode.XYWH_ABS
    assert BoxMode.absolute(0) is BoxMode.XYXY_ABS
    with pytest.raises(ValueError, match=r"bbox_mode 2 \(XYXY_REL\) is not supported: detkit"):
        BoxMode.absolute(Detectron2BoxMode.XYXY_REL)
    for value in (7, "XYWH_ABS", 1.0, True, None):
        with pytest.raises(ValueError, match=rf"bbox_mode {value!r} is not one of"):
            BoxMode.absolute(value)
