"""What a sampler sees: every labelled proposal, per-RoI losses of the current heads, the step's
generator, and the checks on what it returns; the counts of what it picked, recorded where it
picks; the predictor's per-RoI losses and its decoupled (pair) input."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch.nn import functional

from detkit.config import get_default_config
from detkit.modeling import (
    SAMPLER_REGISTRY,
    Box2BoxTransform,
    FastRCNNOutputLayers,
    FastRCNNSampler,
    SamplingContext,
    ShapeSpec,
)
from detkit.modeling.roi_heads import build_roi_heads
from detkit.structures import Boxes, Instances
from detkit.utils.events import EventStorage

IMAGE = (160, 160)
PROPOSALS = [[0.0, 0, 50, 50], [4, 4, 52, 50], [0, 0, 100, 100], [120, 120, 150, 150]]
GT_BOXES = [[2.0, 2, 50, 48]]


def heads(sampler: str = "FastRCNNSampler", *bands: tuple[list, list]):
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.SAMPLER = sampler
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.DROPOUT = 0.0
    for thresholds, labels in bands:
        cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS, cfg.MODEL.ROI_HEADS.IOU_LABELS = thresholds, labels
    torch.manual_seed(0)
    return build_roi_heads(cfg, {"c4": ShapeSpec(channels=4, stride=16)}).train()


def inputs():
    features = {"c4": torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(1))}
    proposals = [Instances(IMAGE, proposal_boxes=Boxes(torch.tensor(PROPOSALS)))]
    targets = [
        Instances(IMAGE, gt_boxes=Boxes(torch.tensor(GT_BOXES)), gt_classes=torch.tensor([2]))
    ]
    return features, proposals, targets


def test_labelled_proposals_carry_the_band_class_and_matched_box() -> None:
    _, proposals, targets = inputs()
    (labelled,) = heads().label_proposals(proposals, targets)
    # IoUs with the ground truth: 0.88, 0.83, 0.23, 0 and 1 for the appended ground truth
    assert labelled.match_labels.tolist() == [1, 1, 0, -1, 1]
    assert labelled.gt_classes.tolist() == [2, 2, 3, -1, 2]  # 3 = background, -1 ignored
    assert labelled.gt_boxes.tensor[:2].tolist() == [GT_BOXES[0]] * 2
    assert labelled.gt_boxes.tensor[2:4].tolist() == PROPOSALS[2:4]  # the box itself


def test_per_roi_losses_match_a_hand_computation_and_average_to_the_mean() -> None:
    generator = torch.Generator().manual_seed(3)
    predictor = FastRCNNOutputLayers(8, 3, Box2BoxTransform((10.0, 10.0, 5.0, 5.0)))
    scores, deltas = torch.randn(4, 4, generator=generator), torch.randn(4, 12, generator=generator)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 9, 9], [1, 1, 4, 4]])
    gt = torch.tensor([[1.0, 1, 11, 12], [0, 0, 20, 20], [5, 5, 9, 9], [1, 1, 4, 4]])
    classes = torch.tensor([1, 3, 0, -1])  # foreground, background, foreground, ignored
    rois = [
        Instances((32, 32), proposal_boxes=Boxes(boxes), gt_boxes=Boxes(gt), gt_classes=classes)
    ]
    per_roi = predictor.losses(scores, deltas, rois, reduction="none")
    log_probs = scores.log_softmax(dim=1)
    expected_cls = [-log_probs[0, 1], -log_probs[1, 3], -log_probs[2, 0], torch.tensor(0.0)]
    torch.testing.assert_close(per_roi["loss_cls"], torch.stack(expected_cls))
    targets = Box2BoxTransform((10.0, 10.0, 5.0, 5.0)).get_deltas(boxes[[0, 2]], gt[[0, 2]])
    predicted = deltas.view(4, 3, 4)[[0, 2], [1, 0]]
    smooth = functional.smooth_l1_loss(predicted, targets, reduction="none").sum(dim=1)
    torch.testing.assert_close(
        per_roi["loss_box_reg"],
        torch.stack([smooth[0], torch.tensor(0.0), smooth[1], torch.tensor(0.0)]),
    )
    # without the ignored RoI, the mean losses are the per-RoI ones averaged
    kept = [rois[0][:3]]
    mean = predictor.losses(scores[:3], deltas[:3], kept)
    torch.testing.assert_close(mean["loss_cls"], per_roi["loss_cls"][:3].mean())
    torch.testing.assert_close(mean["loss_box_reg"], per_roi["loss_box_reg"][:3].sum() / 3)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        predictor.losses(scores, deltas, rois, reduction="sum")


class RecordingSampler:
    """Keeps every labelled foreground and background RoI, recording what the context gave."""

    seen: ClassVar[list] = []

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def __call__(self, proposals, context):
        losses = context.roi_losses(proposals)
        RecordingSampler.seen.append((proposals, losses, context.num_classes))
        return [torch.nonzero(p.match_labels >= 0).flatten() for p in proposals]


@pytest.fixture
def registered(request):
    names = []

    def register(cls):
        SAMPLER_REGISTRY.register(cls)
        names.append(cls.__name__)
        return cls.__name__

    yield register
    for name in names:
        SAMPLER_REGISTRY._obj_map.pop(name)


def test_the_context_scores_rois_with_the_current_heads_without_gradient(registered) -> None:
    RecordingSampler.seen = []
    roi_heads = heads(registered(RecordingSampler))
    features, proposals, targets = inputs()
    losses = roi_heads(features, proposals, targets)
    (((labelled,), per_roi, num_classes),) = RecordingSampler.seen
    assert num_classes == 3 and not per_roi["loss_cls"].requires_grad
    scores, deltas = roi_heads.predict(features, [labelled])
    expected = roi_heads.box_predictor.losses(scores, deltas, [labelled], reduction="none")
    torch.testing.assert_close(per_roi, {k: v.detach() for k, v in expected.items()})
    kept = labelled.match_labels >= 0  # the ignored RoI is not trained on
    torch.testing.assert_close(losses["loss_cls"], expected["loss_cls"][kept].mean())
    assert losses["loss_cls"].requires_grad


def test_the_sampler_draws_from_the_generator_its_context_carries_only() -> None:
    labels = torch.tensor([1] * 12 + [0] * 40 + [-1] * 5)
    images = [Instances(IMAGE, match_labels=labels), Instances(IMAGE, match_labels=labels.flip(0))]
    sampler = FastRCNNSampler(16, 0.25)

    def picks(global_seed: int, seed: int = 5) -> list[list[int]]:
        torch.manual_seed(global_seed)  # whatever else the step drew from the default generator
        context = SamplingContext(lambda rois: {}, 3, torch.Generator().manual_seed(seed))
        return [index.tolist() for index in sampler(images, context)]

    generator = torch.Generator().manual_seed(5)  # one stream for both images, in order
    drawn = [sampler.sample_labels(image.match_labels, generator) for image in images]
    expected = [torch.cat(pair).tolist() for pair in drawn]
    assert picks(0) == picks(1) == expected
    assert picks(0, seed=6) != expected


def test_sampling_records_the_foreground_and_background_rois_per_image_it_picked() -> None:
    roi_heads = heads()
    _, (proposals,), (targets,) = inputs()
    features = {"c4": torch.randn(2, 4, 10, 10, generator=torch.Generator().manual_seed(1))}
    # per image: labels [1, 1, 0, -1, 1] (see above): 3 foreground RoIs, 1 background one
    with EventStorage() as storage:
        sampled = roi_heads.label_and_sample_proposals([proposals] * 2, [targets] * 2, features)
        recorded = {name: value for name, (value, _) in storage.latest().items()}
    assert recorded == {"roi_head/num_fg_samples": 3.0, "roi_head/num_bg_samples": 1.0}
    with EventStorage() as storage:  # the losses record the predictor's accuracy only
        roi_heads.box_predictor.losses(*roi_heads.predict(features, sampled), sampled)
        assert set(storage.latest()) == {"fast_rcnn/cls_accuracy", "fast_rcnn/fg_cls_accuracy"}


class PicksIgnored:
    @classmethod
    def from_config(cls, cfg):
        return cls()

    def __call__(self, proposals, context):
        return [torch.arange(len(p)) for p in proposals]


class TooFewLists(PicksIgnored):
    def __call__(self, proposals, context):
        return []


def test_a_sampler_that_picks_ignored_rois_or_miscounts_images_is_named(registered) -> None:
    features, proposals, targets = inputs()
    with pytest.raises(ValueError, match="sampler PicksIgnored picked RoIs the matcher ignores"):
        heads(registered(PicksIgnored))(features, proposals, targets)
    with pytest.raises(ValueError, match="returned 0 index lists for 1 images"):
        heads(registered(TooFewLists))(features, proposals, targets)


def test_a_decoupled_box_head_feeds_scores_and_deltas_from_its_two_features() -> None:
    predictor = FastRCNNOutputLayers((6, 10), 2, Box2BoxTransform((1.0, 1.0, 1.0, 1.0)))
    assert predictor.cls_score.in_features == 6 and predictor.bbox_pred.in_features == 10
    cls_features, box_features = torch.randn(5, 6), torch.randn(5, 10)
    scores, deltas = predictor((cls_features, box_features))
    torch.testing.assert_close(scores, predictor.cls_score(cls_features))
    torch.testing.assert_close(deltas, predictor.bbox_pred(box_features))
    for bad in [(6,), (6, 0), "6", (6, 10, 2)]:
        with pytest.raises(ValueError, match="a positive int or a pair"):
            FastRCNNOutputLayers(bad, 2, Box2BoxTransform((1.0, 1.0, 1.0, 1.0)))
