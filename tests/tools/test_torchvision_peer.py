"""tools/torchvision_peer: the Fast R-CNN built from torchvision's parts computes what detkit
computes with the same weights: stage by stage (pooling, box head and predictor) and as whole
detections on one map and on a feature pyramid, for each pooler type; the equal-work check
refuses models that differ, a box head without a peer is refused, and the random inputs are
what the benchmark says. Small models only."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torchvision.ops import box_iou

from detkit.config import load_config, parse_overrides
from detkit.export import random_boxes
from detkit.modeling import build_model
from detkit.modeling.poolers import ROIPooler

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
FPN_CONFIG = REPO / "configs" / "Base-FastRCNN-FPN.yaml"
SMALL = [
    "MODEL.DEVICE=cpu",
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
]
SMALL_FPN = [
    "MODEL.DEVICE=cpu",
    "MODEL.RESNETS.DEPTH=18",
    "MODEL.FPN.OUT_CHANNELS=16",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    """The package, imported as tools/benchmark.py imports it (its folder first on the path)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        return importlib.import_module("torchvision_peer")
    finally:
        sys.path.remove(str(REPO / "tools"))


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Tiny models: one thread (see the root conftest)."""


def models_and_inputs(peer, config: Path, opts: list[str], size=(96, 128), proposals=120):
    cfg = load_config(config, parse_overrides(opts))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sample = peer.make_sample(*size, proposals, cfg.MODEL.ROI_HEADS.NUM_CLASSES, seed=3)
    sample = peer.distinct_proposals(model, sample)
    inputs = peer.detkit_inputs([sample], CPU)
    peer.calibrate_head(model, inputs)
    twin = peer.build_peer(cfg, model).eval()
    images, boxes, _ = peer.peer_inputs([sample], CPU)
    return model, twin, inputs, images, boxes


@pytest.mark.parametrize("pooler", ["ROIPool", "ROIAlign", "ROIAlignV2"])
def test_the_peer_detects_what_detkit_detects_on_one_map(peer, pooler: str) -> None:
    opts = [*SMALL, f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler}"]
    model, twin, inputs, images, boxes = models_and_inputs(peer, SHAPES_CONFIG, opts)
    with torch.no_grad():
        mine = model(inputs)[0]["instances"]
        theirs = twin(images, boxes)[0]
    assert len(mine) > 10  # the calibrated scores leave the post-processing real work
    assert peer.detection_mismatch(mine, theirs) is None


@pytest.mark.parametrize("pooler", ["ROIAlign", "ROIAlignV2"])
def test_the_peer_detects_what_detkit_detects_on_a_feature_pyramid(peer, pooler: str) -> None:
    opts = [*SMALL_FPN, f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler}"]
    model, twin, inputs, images, boxes = models_and_inputs(
        peer, FPN_CONFIG, opts, size=(128, 160), proposals=200
    )
    with torch.no_grad():
        mine = model(inputs)[0]["instances"]
        theirs = twin(images, boxes)[0]
    assert len(mine) > 10
    assert peer.detection_mismatch(mine, theirs) is None


@pytest.mark.parametrize("pooler", ["ROIPool", "ROIAlign", "ROIAlignV2"])
def test_the_peer_pools_one_map_as_detkits_pooler(peer, pooler: str) -> None:
    opts = [
        *SMALL,
        f"MODEL.ROI_BOX_HEAD.POOLER_TYPE={pooler}",
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO=2",
    ]
    cfg = load_config(SHAPES_CONFIG, parse_overrides(opts))
    model = build_model(cfg).eval()
    heads = model.roi_heads
    (name,) = heads.in_features
    generator = torch.Generator().manual_seed(4)
    features = {name: torch.randn(2, 16, 24, 32, generator=generator)}
    boxes = [random_boxes(30, 96, 128, seed=s) for s in (5, 6)]
    pooling = peer.peer_pooler(cfg, heads)
    torch.testing.assert_close(
        pooling(features, boxes, [(96, 128)] * 2), heads.pooler([features[name]], boxes)
    )


def test_the_aligned_multi_level_peer_pools_as_detkits_pooler(peer) -> None:
    torch.manual_seed(1)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    maps = {f"p{i}": torch.randn(2, 3, 128 // 2**i, 160 // 2**i) for i in range(4)}
    # sides 40, 150, 300 and 500 px fall on P2, P3, P4 and P5 by the canonical 224 rule
    sized = torch.tensor([[5.0, 5, 45, 45], [10, 10, 160, 160], [0, 0, 300, 300], [0, 0, 500, 500]])
    boxes = [torch.cat([sized, random_boxes(40, 512, 640, seed=s)]) for s in (0, 1)]
    pooler = peer.AlignedMultiScaleRoIAlign(list(maps), scales, (7, 7), 2)
    assert pooler.mapper([sized])[:4].tolist() == [0, 1, 2, 3]
    mine = ROIPooler(7, scales, 2, "ROIAlignV2")(list(maps.values()), boxes)
    torch.testing.assert_close(pooler(maps, boxes, None), mine)


def test_the_peers_head_scores_as_detkits_with_background_first(peer) -> None:
    """torchvision puts background first among the class scores and has a box for it; detkit
    puts it last: the copied weights give the same scores reordered and the same boxes."""
    cfg = load_config(SHAPES_CONFIG, parse_overrides(SMALL))
    model = build_model(cfg).eval()
    twin = peer.build_peer(cfg, model).eval()
    pooled = torch.randn(9, 16, 7, 7, generator=torch.Generator().manual_seed(7))
    heads = model.roi_heads
    with torch.no_grad():
        scores, deltas = heads.box_predictor(heads.box_head(pooled))
        their_scores, their_deltas = twin.roi_heads.box_predictor(twin.roi_heads.box_head(pooled))
    classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    torch.testing.assert_close(their_scores, scores[:, [classes, *range(classes)]])
    torch.testing.assert_close(their_deltas[:, 4:], deltas)
    assert not their_deltas[:, :4].any()


def test_the_check_refuses_models_that_differ(peer) -> None:
    model, twin, inputs, images, boxes = models_and_inputs(peer, SHAPES_CONFIG, SMALL)
    with torch.no_grad():
        twin.roi_heads.box_predictor.cls_score.weight[1:].mul_(1.5)
        mine = model(inputs)[0]["instances"]
        theirs = twin(images, boxes)[0]
    assert peer.detection_mismatch(mine, theirs) is not None


def test_a_box_head_without_a_peer_is_refused(peer) -> None:
    cfg = load_config(SHAPES_CONFIG, parse_overrides([*SMALL, "MODEL.ROI_BOX_HEAD.NUM_FC=1"]))
    with pytest.raises(ValueError, match="two-layer FastRCNNFCHead"):
        peer.build_peer(cfg, build_model(cfg))


def test_samples_have_foreground_proposals_inside_the_image(peer) -> None:
    sample = peer.make_sample(60, 80, 40, num_classes=3, seed=0)
    assert sample.image.shape == (3, 60, 80) and sample.image.dtype == torch.uint8
    assert sample.proposals.shape == (40, 4)
    boxes = sample.proposals
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    best = box_iou(boxes[:10], sample.gt_boxes).max(dim=1).values
    assert (best > 0.5).sum() >= 5  # the jittered quarter mostly overlaps its object
    assert set(sample.gt_classes.tolist()) <= {0, 1, 2}


def _detections(scores: list[float], classes: list[int], boxes: list[list[float]]):
    """detkit's and torchvision's forms of one detection set."""
    from detkit.structures import Boxes, Instances

    mine = Instances((100, 100))
    mine.pred_boxes = Boxes(torch.tensor(boxes))
    mine.scores = torch.tensor(scores)
    mine.pred_classes = torch.tensor(classes)
    theirs = {
        "boxes": torch.tensor(boxes),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(classes) + 1,
    }
    return mine, theirs


def test_ties_at_the_cut_may_keep_other_boxes_of_the_same_classes(peer) -> None:
    """Three detections kept of more, the last two tied in score: which tied boxes survive the
    cut is the model's choice, not other work; other classes at the cut, or a tie below a cut
    that was not made, are a difference."""
    above = [[0.0, 0.0, 10.0, 10.0]]
    mine, _ = _detections([0.9, 0.4, 0.4], [1, 2, 2], [*above, [1, 1, 5, 5], [2, 2, 6, 6]])
    _, theirs = _detections([0.9, 0.4, 0.4], [1, 2, 2], [*above, [3, 3, 9, 9], [4, 4, 8, 8]])
    assert peer.detection_mismatch(mine, theirs, kept_at_most=3) is None
    assert peer.detection_mismatch(mine, theirs, kept_at_most=4) is not None
    assert peer.detection_mismatch(mine, theirs) is not None
    _, other_classes = _detections([0.9, 0.4, 0.4], [1, 2, 0], [*above, [3, 3, 9, 9], [4, 4, 8, 8]])
    assert "classes" in peer.detection_mismatch(mine, other_classes, kept_at_most=3)
    _, other_top = _detections(
        [0.9, 0.4, 0.4], [1, 2, 2], [[0, 0, 20, 20], [1, 1, 5, 5], [2, 2, 6, 6]]
    )
    assert peer.detection_mismatch(mine, other_top, kept_at_most=3) is not None
