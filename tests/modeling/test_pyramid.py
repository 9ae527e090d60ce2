"""Multi-scale testing (paper §2.4): the scale each RoI is pooled from, the pyramid wrapper
(:class:`~detkit.modeling.PyramidInference`) against the single-scale model, and where the
inference path is chosen."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.config import ConfigError, check_config, load_config
from detkit.data.loaders import evaluation_mapper
from detkit.data.mapper import DatasetMapper
from detkit.data.transforms import ResizeShortestEdge, resize_shortest_edge
from detkit.modeling import PyramidInference, build_inference_model, build_model
from detkit.modeling.poolers import assign_boxes_to_scales
from detkit.structures import Instances

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"


def square(side: float) -> list[float]:
    return [0.0, 0.0, side, side]


def test_each_box_goes_to_the_scale_where_its_area_is_closest_to_224_squared() -> None:
    factors = [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    boxes = torch.tensor([square(224), square(448), square(112), square(300), square(20)])
    # 300 px: 150² = 22500 at 0.5 is 27676 from 50176, 300² = 90000 at 1 is 39824 from it
    assert assign_boxes_to_scales(boxes, factors).tolist() == [1, 0, 2, 0, 2]
    # per-axis factors multiply the area; a tie goes to the first scale
    wide = torch.tensor([[0.0, 0, 448, 112]])
    assert assign_boxes_to_scales(wide, [(0.5, 2.0), (2.0, 0.5)]).tolist() == [0]


@pytest.fixture
def record(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    cv2.rectangle(image, (20, 15), (70, 60), (255, 255, 255), -1)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), image)
    boxes = np.array(
        [[18, 12, 72, 63], [10, 10, 40, 30], [60, 40, 118, 88], [0, 0, 120, 90], [25, 20, 65, 55]],
        np.float32,
    )
    return {
        "file_name": str(path),
        "height": 90,
        "width": 120,
        "image_id": 0,
        "proposal_boxes": boxes,
        "proposal_objectness_logits": np.zeros(5, np.float32),
    }


def model_and_config(*overrides: str):
    cfg = load_config(SHAPES, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0", *overrides])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def as_read(record: dict) -> dict:
    """The model's input for ``record`` at the image's own size, as the pyramid takes it."""
    return DatasetMapper(False, [])(dict(record))


def pyramid_factors(sizes: list[int], max_size: int, height: int = 90, width: int = 120):
    """The (x, y) factor of each scale of a ``height`` x ``width`` image, as resized."""
    factors = []
    for size in sizes:
        resized, _ = resize_shortest_edge(np.zeros((height, width, 3), np.uint8), size, max_size)
        factors.append((resized.shape[1] / width, resized.shape[0] / height))
    return factors


def detections(model, inputs):
    with torch.no_grad():
        return model([inputs])[0]["instances"]


def assert_same_detections(pyramid, single) -> None:
    assert len(single) > 0 and pyramid.image_size == single.image_size
    torch.testing.assert_close(pyramid.scores, single.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        pyramid.pred_boxes.tensor, single.pred_boxes.tensor, rtol=1e-4, atol=1e-3
    )
    assert torch.equal(pyramid.pred_classes, single.pred_classes)


def test_a_one_scale_pyramid_gives_the_single_scale_detections(record) -> None:
    model, cfg = model_and_config("INPUT.MIN_SIZE_TEST=200", "INPUT.MAX_SIZE_TEST=400")
    single = detections(model, DatasetMapper.from_config(cfg, is_train=False)(dict(record)))
    pyramid = detections(PyramidInference(model, [200], 400).eval(), as_read(record))
    assert_same_detections(pyramid, single)


def test_rois_are_pooled_from_their_scale(record) -> None:
    model, cfg = model_and_config("INPUT.MIN_SIZE_TEST=300", "INPUT.MAX_SIZE_TEST=1000")
    # without the whole-image box, every proposal's area is nearest 224² at 300 (x3.33), not 90
    record["proposal_boxes"] = np.delete(record["proposal_boxes"], 3, axis=0)
    record["proposal_objectness_logits"] = np.zeros(4, np.float32)
    inputs = as_read(record)
    boxes = inputs["proposals"].proposal_boxes.tensor
    assert assign_boxes_to_scales(boxes, pyramid_factors([90, 300], 1000)).tolist() == [1] * 4
    single = detections(model, DatasetMapper.from_config(cfg, is_train=False)(dict(record)))
    assert_same_detections(detections(PyramidInference(model, [90, 300], 1000), inputs), single)
    # and the other way: pooled from the 90 scale, they give the 90 scale's detections
    assert assign_boxes_to_scales(boxes, pyramid_factors([90, 1200], 1600)).tolist() == [0] * 4
    cfg.INPUT.MIN_SIZE_TEST = 90
    single = detections(model, DatasetMapper.from_config(cfg, is_train=False)(dict(record)))
    assert_same_detections(detections(PyramidInference(model, [90, 1200], 1600), inputs), single)


def test_a_config_with_test_min_sizes_is_inferred_by_the_pyramid_wrapper() -> None:
    model, cfg = model_and_config(
        "TEST.MIN_SIZES=[480, 576, 688, 864, 1200]", "INPUT.MAX_SIZE_TEST=2000"
    )
    inference = build_inference_model(cfg, model)
    assert isinstance(inference, PyramidInference) and inference.model is model
    assert (inference.min_sizes, inference.max_size) == ([480, 576, 688, 864, 1200], 2000)
    assert build_inference_model(cfg, inference) is inference
    assert evaluation_mapper(cfg).transforms == []  # the wrapper resizes, the mapper does not
    # the wrapper adds no weights: a checkpoint is the model's, whichever the path
    assert inference.state_dict().keys() == {f"model.{k}" for k in model.state_dict()}
    model, cfg = model_and_config()
    assert build_inference_model(cfg, model) is model
    (resize,) = evaluation_mapper(cfg).transforms
    assert isinstance(resize, ResizeShortestEdge) and resize.short_edges == [256]


def test_sizes_that_are_not_positive_are_refused_before_any_work() -> None:
    model, cfg = model_and_config("TEST.MIN_SIZES=[480, 0]")
    with pytest.raises(ConfigError, match=r"TEST.MIN_SIZES must hold positive .* \[480, 0\]"):
        check_config(cfg)
    with pytest.raises(ValueError, match="PyramidInference: needs positive sizes"):
        PyramidInference(model, [480, -1], 1000)


def test_a_resized_image_or_training_is_refused(record) -> None:
    model, cfg = model_and_config("INPUT.MIN_SIZE_TEST=200", "INPUT.MAX_SIZE_TEST=400")
    pyramid = PyramidInference(model, [90, 300], 1000).eval()
    resized = DatasetMapper.from_config(cfg, is_train=False)(dict(record))
    with pytest.raises(ValueError, match=r"made from the image at its own size, 90x120, .*200x267"):
        detections(pyramid, resized)
    with pytest.raises(ValueError, match="runs inference only"):
        pyramid.train()([as_read(record)])


def test_rois_of_different_scales_are_decoded_against_their_own_proposals(record) -> None:
    """Proposals whose scales alternate (small ones pooled at 300, large ones at 90): every
    detection of the pyramid is the one the single-scale model gives for that proposal alone at
    its scale, chosen here by hand (no suppression, no score threshold, so nothing is lost)."""
    sizes, max_size = [90, 300], 1000
    boxes = np.array(
        [[18, 12, 72, 63], [0, 0, 120, 90], [10, 10, 40, 30], [5, 5, 115, 85], [25, 20, 65, 55]],
        np.float32,
    )
    record["proposal_boxes"] = boxes
    record["proposal_objectness_logits"] = np.zeros(len(boxes), np.float32)
    # the image is 90 x 120: at a shortest edge s every side is scaled by s / 90
    scale_of = [
        min(sizes, key=lambda s: abs((x2 - x1) * (y2 - y1) * (s / 90) ** 2 - 224.0**2))
        for x1, y1, x2, y2 in boxes.tolist()
    ]
    assert scale_of == [300, 90, 300, 90, 300]
    model, cfg = model_and_config(
        "MODEL.ROI_HEADS.NMS_THRESH_TEST=1.0", f"INPUT.MAX_SIZE_TEST={max_size}"
    )
    pyramid = detections(PyramidInference(model, sizes, max_size), as_read(record))
    expected = []
    for box, size in zip(boxes, scale_of, strict=True):
        cfg.INPUT.MIN_SIZE_TEST = size
        alone = {**record, "proposal_boxes": box[None]}
        alone["proposal_objectness_logits"] = np.zeros(1, np.float32)
        expected.append(detections(model, DatasetMapper.from_config(cfg, is_train=False)(alone)))
    assert len(pyramid) == len(boxes) * cfg.MODEL.ROI_HEADS.NUM_CLASSES
    single = Instances.cat(expected)
    order = torch.argsort(single.scores, descending=True)
    assert_same_detections(pyramid, single[order])
