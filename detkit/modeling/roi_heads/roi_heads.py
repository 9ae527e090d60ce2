"""RoI heads: label and sample proposals, pool their features, run the box head and predictor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...structures import Boxes, Instances, pairwise_iou
from ...utils.events import current_event_storage
from ...utils.registry import Registry
from ..backbone import ShapeSpec
from ..matcher import Matcher
from ..poolers import ROIPooler, assign_boxes_to_scales, dedup_boxes
from ..sampling import SamplingContext, build_sampler, sampling_generator
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """RoI heads; ``cls.from_config(cfg, input_shape)`` builds one."""


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(nn.Module):
    """Fast R-CNN's heads (paper §2) on one feature map or several (a feature pyramid).

    Per image, proposals that coincide on the grid of the map they are pooled from are removed
    first (``dedup_proposals``; the first in the given objectness order stays).
    Training: ground-truth boxes join the proposals, each proposal is matched to its best
    ground truth by IoU, and the sampler picks the mini-batch; the output is the losses.
    Inference: every proposal is scored and decoded into detections.

    ``in_features`` names the maps the ``pooler`` (an :class:`ROIPooler`) pools from, in the
    order of its scales (finest first).
    """

    def __init__(
        self,
        in_features: str | Sequence[str],
        pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: FastRCNNOutputLayers,
        proposal_matcher: Matcher,
        sampler,
        proposal_append_gt: bool = True,
        dedup_proposals: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = [in_features] if isinstance(in_features, str) else list(in_features)
        scales = getattr(pooler, "scales", None)
        if scales is not None and len(scales) != len(self.in_features):
            raise ValueError(
                f"StandardROIHeads: {len(self.in_features)} in_features {self.in_features} but "
                f"the pooler has {len(scales)} scales"
            )
        if dedup_proposals and scales is None:
            raise ValueError(
                "StandardROIHeads: dedup_proposals needs a pooler with scales (an ROIPooler)"
            )
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = proposal_matcher
        self.sampler = sampler
        self.proposal_append_gt = proposal_append_gt
        self.dedup_proposals = dedup_proposals

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> StandardROIHeads:
        heads, box = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
        in_features, shapes = _in_features(heads.IN_FEATURES, input_shape)
        if len({s.channels for s in shapes}) > 1:
            channels = {f: s.channels for f, s in zip(in_features, shapes, strict=True)}
            raise ValueError(
                f"StandardROIHeads: MODEL.ROI_HEADS.IN_FEATURES: the maps pooled from must have "
                f"the same number of channels, got {channels}"
            )
        try:
            pooler = ROIPooler.from_config(cfg, [1.0 / s.stride for s in shapes])
        except ValueError as error:
            strides = {f: s.stride for f, s in zip(in_features, shapes, strict=True)}
            raise ValueError(
                f"StandardROIHeads: cannot pool from {strides} (MODEL.ROI_HEADS.IN_FEATURES, "
                f"strides): {error}"
            ) from error
        resolution = box.POOLER_RESOLUTION
        box_head = build_box_head(cfg, (shapes[0].channels, resolution, resolution))
        return cls(
            in_features,
            pooler,
            box_head,
            FastRCNNOutputLayers.from_config(cfg, box_head.output_size),
            Matcher(heads.IOU_THRESHOLDS, heads.IOU_LABELS),
            build_sampler(cfg),
            proposal_append_gt=heads.PROPOSAL_APPEND_GT,
            dedup_proposals=heads.DEDUP_PROPOSALS,
        )

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, Tensor] | list[Instances]:
        if self.training and targets is None:
            raise ValueError("StandardROIHeads: training needs ground-truth instances")
        if self.dedup_proposals:
            proposals = self.remove_duplicate_proposals(proposals)
        if self.training:
            proposals = self.label_and_sample_proposals(proposals, targets, features)
        scores, deltas = self.predict(features, proposals)
        if self.training:
            return self.box_predictor.losses(scores, deltas, proposals)
        return self.box_predictor.inference(scores, deltas, proposals)

    def predict(
        self, features: dict[str, Tensor], proposals: list[Instances]
    ) -> tuple[Tensor, Tensor]:
        """Class scores and box deltas of every proposal: pooler, box head, predictor."""
        pooled = self.pooler(
            [features[f] for f in self.in_features], [p.proposal_boxes for p in proposals]
        )
        return self.box_predictor(self.box_head(pooled))

    @torch.no_grad()
    def inference_pyramid(
        self,
        features: Sequence[dict[str, Tensor]],
        proposals: Instances,
        factors: Sequence[tuple[float, float]],
    ) -> Instances:
        """Detections of one image from its pyramid (paper §2.4; run by
        :class:`~detkit.modeling.PyramidInference`): ``features`` of each scale,
        ``proposals`` in the original image's pixels, ``factors`` the (x, y) resize factor of
        each scale. Each RoI is pooled from the scale ``assign_boxes_to_scales`` gives it, with
        duplicates removed on that scale's grid; boxes are decoded in the
        original image, so the detections are in its pixels."""
        boxes = proposals.proposal_boxes.tensor
        levels = assign_boxes_to_scales(boxes, factors)
        pooled, kept = [], []
        for level, (level_features, (fx, fy)) in enumerate(zip(features, factors, strict=True)):
            index = torch.nonzero(levels == level).flatten()
            scaled = boxes[index] * boxes.new_tensor([fx, fy, fx, fy])
            if self.dedup_proposals:
                keep = self.distinct_on_grid(scaled)
                index, scaled = index[keep], scaled[keep]
            maps = [level_features[f] for f in self.in_features]
            pooled.append(self.pooler(maps, [scaled]))
            kept.append(index)
        order = torch.cat(kept)
        scores, deltas = self.box_predictor(self.box_head(torch.cat(pooled)))
        (result,) = self.box_predictor.inference(scores, deltas, [proposals[order]])
        return result

    def roi_losses(
        self, features: dict[str, Tensor], proposals: list[Instances]
    ) -> dict[str, Tensor]:
        """Per-RoI losses of labelled ``proposals`` (``reduction="none"``)."""
        scores, deltas = self.predict(features, proposals)
        return self.box_predictor.losses(scores, deltas, proposals, reduction="none")

    def distinct_on_grid(self, boxes: Boxes | Tensor) -> Tensor:
        """Indices of the ``boxes`` (of one image, in the pooled maps' image pixels) that do not
        coincide with an earlier one on the grid of the map they are pooled from."""
        return dedup_boxes(
            boxes,
            self.pooler.scales,
            getattr(self.pooler, "canonical_box_size", 224),
            getattr(self.pooler, "canonical_level", 4),
        )

    @torch.no_grad()
    def remove_duplicate_proposals(self, proposals: list[Instances]) -> list[Instances]:
        """Per image, the proposals without those that coincide with an earlier one on the grid
        of the map they are pooled from (:func:`detkit.modeling.poolers.dedup_boxes`)."""
        return [p[self.distinct_on_grid(p.proposal_boxes)] for p in proposals]

    @torch.no_grad()
    def label_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Per image, every proposal (and the ground truth, with ``proposal_append_gt``)
        matched to its best ground-truth box: ``proposal_boxes``, ``match_labels`` (the
        Matcher's band: 1 foreground, 0 background, -1 ignored), ``gt_classes`` (K for
        background, -1 for ignored) and ``gt_boxes`` (the matched ground truth; the box
        itself when not foreground)."""
        labelled = []
        background = self.box_predictor.num_classes
        for image_proposals, gt in zip(proposals, targets, strict=True):
            boxes = image_proposals.proposal_boxes
            if self.proposal_append_gt:
                boxes = Boxes.cat([boxes, gt.gt_boxes.to(boxes.device)])
            matches, labels = self.proposal_matcher(pairwise_iou(gt.gt_boxes, boxes))
            classes = torch.full((len(boxes),), background, dtype=torch.int64, device=boxes.device)
            classes[labels == -1] = -1
            gt_boxes = boxes.tensor.clone()
            foreground = torch.nonzero(labels == 1).flatten()
            if len(gt) > 0:
                classes[foreground] = gt.gt_classes[matches[foreground]]
                gt_boxes[foreground] = gt.gt_boxes.tensor[matches[foreground]]
            labelled.append(
                Instances(
                    image_proposals.image_size,
                    proposal_boxes=boxes,
                    match_labels=labels,
                    gt_classes=classes,
                    gt_boxes=Boxes(gt_boxes),
                )
            )
        return labelled

    def label_and_sample_proposals(
        self,
        proposals: list[Instances],
        targets: list[Instances],
        features: dict[str, Tensor] | None = None,
    ) -> list[Instances]:
        """Per image, the RoIs the sampler picks from :meth:`label_proposals`' output (with
        its fields). ``features`` let the sampler score RoIs with the current heads
        (:class:`~detkit.modeling.sampling.SamplingContext`); without them it cannot. The
        sampler draws from the step's generator (``sampling.sampling_generator()``); the
        foreground and background RoIs it picked per image are recorded as
        ``roi_head/num_fg_samples`` and ``roi_head/num_bg_samples``."""
        labelled = self.label_proposals(proposals, targets)

        def roi_losses(rois: list[Instances]) -> dict[str, Tensor]:
            if features is None:
                raise ValueError(
                    "label_and_sample_proposals: this sampler scores RoIs; pass the features"
                )
            return self.roi_losses(features, rois)

        context = SamplingContext(roi_losses, self.box_predictor.num_classes, sampling_generator())
        with torch.no_grad():
            picked = self.sampler(labelled, context)
        if len(picked) != len(labelled):
            raise ValueError(
                f"sampler {type(self.sampler).__name__} returned {len(picked)} index lists for "
                f"{len(labelled)} images"
            )
        sampled = [image[index] for image, index in zip(labelled, picked, strict=True)]
        if any(bool((image.match_labels == -1).any()) for image in sampled):
            raise ValueError(
                f"sampler {type(self.sampler).__name__} picked RoIs the matcher ignores "
                "(match_labels == -1); it must pick foreground (1) and background (0) only"
            )
        self._record_sample_counts(sampled)
        return sampled

    def _record_sample_counts(self, sampled: list[Instances]) -> None:
        """The mini-batch's foreground and background RoIs per image, under detectron2's names,
        in the current event storage (none outside a trainer)."""
        storage = current_event_storage()
        if storage is None or not sampled:
            return
        gt_classes = torch.cat([image.gt_classes for image in sampled])
        background = self.box_predictor.num_classes
        foreground = int(((gt_classes >= 0) & (gt_classes < background)).sum())
        storage.put_scalar("roi_head/num_fg_samples", foreground / len(sampled))
        storage.put_scalar(
            "roi_head/num_bg_samples", int((gt_classes == background).sum()) / len(sampled)
        )


def _in_features(
    names: Sequence[str], input_shape: dict[str, ShapeSpec]
) -> tuple[list[str], list[ShapeSpec]]:
    """The maps to pool from, finest first: ``names`` as given (checked), or when empty every map
    of the backbone, ordered by stride."""
    if not names:
        names = sorted(input_shape, key=lambda name: input_shape[name].stride)
    else:
        names = list(names)
        missing = [name for name in names if name not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES names {missing}, which the backbone does not "
                f"produce; it produces {list(input_shape)}"
            )
        strides = [input_shape[name].stride for name in names]
        if strides != sorted(strides) or len(set(strides)) != len(strides):
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES must list maps of different strides finest "
                f"first, got {dict(zip(names, strides, strict=True))}"
            )
    if not names:
        raise ValueError("StandardROIHeads: the backbone returns no feature map")
    return names, [input_shape[name] for name in names]


def build_roi_heads(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The RoI heads named by ``MODEL.ROI_HEADS.NAME``."""
    return ROI_HEADS_REGISTRY.build(cfg.MODEL.ROI_HEADS.NAME, cfg, input_shape)
