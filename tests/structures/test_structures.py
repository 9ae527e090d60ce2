"""detkit.structures: Boxes and Instances, checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from detkit.structures import Boxes, Instances, pairwise_iou


def test_boxes_area_clip_nonempty_by_hand() -> None:
    boxes = Boxes(torch.tensor([[0.0, 0, 10, 5], [-4, 2, 6, 12], [5, 5, 5, 9], [8, 8, 2, 9]]))
    assert boxes.area().tolist() == [50.0, 100.0, 0.0, 0.0]
    assert boxes.nonempty().tolist() == [True, True, False, False]
    assert Boxes(torch.tensor([[0.0, 0, 1, 3]])).nonempty(threshold=1.0).tolist() == [False]
    boxes.clip((8, 7))  # height 8, width 7
    assert boxes.tensor.tolist() == [[0, 0, 7, 5], [0, 2, 6, 8], [5, 5, 5, 8], [7, 8, 2, 8]]


def test_boxes_indexing_cat_and_shapes() -> None:
    boxes = Boxes(torch.arange(12.0).view(3, 4))
    assert len(boxes) == 3
    assert boxes[1].tensor.tolist() == [[4.0, 5, 6, 7]]
    assert boxes[torch.tensor([True, False, True])].tensor[:, 0].tolist() == [0.0, 8.0]
    assert len(Boxes.cat([boxes, boxes[1:]])) == 5
    assert Boxes(torch.tensor([])).tensor.shape == (0, 4)
    assert Boxes(torch.tensor([[1, 2, 3, 4]])).tensor.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        Boxes(torch.zeros(3, 5))


def test_pairwise_iou_by_hand() -> None:
    a = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 5]]))
    b = Boxes(torch.tensor([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]]))
    expected = torch.tensor([[25 / 175, 1.0, 0.0], [0.0, 25 / 100, 0.0]])
    torch.testing.assert_close(pairwise_iou(a, b), expected)


def make_instances() -> Instances:
    return Instances(
        (20, 30),
        gt_boxes=Boxes(torch.tensor([[0.0, 0, 5, 5], [1, 1, 9, 9], [2, 2, 4, 8]])),
        gt_classes=torch.tensor([2, 0, 1]),
        names=["a", "b", "c"],
    )


def test_instances_fields_len_and_indexing() -> None:
    inst = make_instances()
    assert len(inst) == 3 and inst.image_size == (20, 30)
    assert inst.has("gt_classes") and not inst.has("scores")
    last = inst[-1]
    assert len(last) == 1 and last.names == ["c"] and last.gt_classes.tolist() == [1]
    assert inst[1:].names == ["b", "c"]
    with pytest.raises(IndexError):
        inst[3]
    with pytest.raises(AttributeError, match="scores"):
        inst.scores  # noqa: B018
    with pytest.raises(ValueError, match="length 2"):
        inst.scores = torch.ones(2)
    inst.remove("names")  # lists take int and slice indices only
    assert sorted(inst.get_fields()) == ["gt_boxes", "gt_classes"]
    picked = inst[torch.tensor([2, 0])]
    assert picked.gt_classes.tolist() == [1, 2]
    assert picked.gt_boxes.tensor[:, 3].tolist() == [8.0, 5.0]


def test_instances_cat() -> None:
    merged = Instances.cat([make_instances(), make_instances()[1:]])
    assert len(merged) == 5
    assert merged.gt_classes.tolist() == [2, 0, 1, 0, 1]
    assert merged.names == ["a", "b", "c", "b", "c"]
    assert merged.gt_boxes.tensor.shape == (5, 4)
    with pytest.raises(ValueError, match="image size"):
        Instances.cat([make_instances(), Instances((1, 1), gt_classes=torch.ones(1))])


def test_instances_get_set_has_as_detectron2() -> None:
    """detectron2's field access by name, which the error of inst["name"] recommends."""
    inst = make_instances()
    with pytest.raises(TypeError, match=r"instances\.get\('scores'\)"):
        inst["scores"]
    inst.set("scores", torch.tensor([0.5, 0.25, 0.125]))
    assert inst.has("scores")
    assert inst.get("scores") is inst.scores
    assert inst.get("names") == ["a", "b", "c"]
    with pytest.raises(KeyError, match=r"no field 'masks'.*gt_boxes"):
        inst.get("masks")
    with pytest.raises(ValueError, match="length 2"):
        inst.set("masks", torch.ones(2))
