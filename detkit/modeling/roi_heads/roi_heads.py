"""RoI heads: label and sample proposals, pool their features, run the box head and predictor."""

from __future__ import annotations

import torch
from fvcore.common.registry import Registry
from torch import Tensor, nn

from ...layers import ROIPool
from ...structures import Boxes, Instances, pairwise_iou
from ..backbone import ShapeSpec
from ..matcher import Matcher
from ..sampling import build_sampler
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """RoI heads; ``cls.from_config(cfg, input_shape)`` builds one."""

POOLERS = {"ROIPool": ROIPool}


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(nn.Module):
    """Fast R-CNN's heads on one feature map (paper §2).

    Training: ground-truth boxes join the proposals, each proposal is matched to its best
    ground truth by IoU, and the sampler picks the mini-batch; the output is the losses.
    Inference: every proposal is scored and decoded into detections.
    """

    def __init__(
        self,
        in_feature: str,
        pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: FastRCNNOutputLayers,
        proposal_matcher: Matcher,
        sampler,
        proposal_append_gt: bool = True,
    ) -> None:
        super().__init__()
        self.in_feature = in_feature
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = proposal_matcher
        self.sampler = sampler
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> StandardROIHeads:
        if len(input_shape) != 1:
            raise ValueError(f"StandardROIHeads pools one feature map, got {sorted(input_shape)}")
        ((in_feature, shape),) = input_shape.items()
        box = cfg.MODEL.ROI_BOX_HEAD
        if box.POOLER_TYPE not in POOLERS:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.POOLER_TYPE {box.POOLER_TYPE!r} is not in {sorted(POOLERS)}"
            )
        resolution = box.POOLER_RESOLUTION
        pooler = POOLERS[box.POOLER_TYPE](resolution, 1.0 / shape.stride)
        box_head = build_box_head(cfg, (shape.channels, resolution, resolution))
        heads = cfg.MODEL.ROI_HEADS
        return cls(
            in_feature,
            pooler,
            box_head,
            FastRCNNOutputLayers.from_config(cfg, box_head.output_size),
            Matcher([heads.BG_IOU_LO, heads.IOU_THRESHOLDS[0]], [-1, 0, 1]),
            build_sampler(cfg),
            proposal_append_gt=heads.PROPOSAL_APPEND_GT,
        )

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, Tensor] | list[Instances]:
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads: training needs ground-truth instances")
            proposals = self.label_and_sample_proposals(proposals, targets)
        boxes = [p.proposal_boxes.tensor for p in proposals]
        scores, deltas = self.box_predictor(
            self.box_head(self.pooler(features[self.in_feature], boxes))
        )
        if self.training:
            return self.box_predictor.losses(scores, deltas, proposals)
        return self.box_predictor.inference(scores, deltas, proposals)

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Per image, the sampled RoIs with ``proposal_boxes``, ``gt_classes`` (K = background)
        and ``gt_boxes`` (the matched ground truth; the RoI itself for background)."""
        sampled = []
        background = self.box_predictor.num_classes
        for image_proposals, gt in zip(proposals, targets, strict=True):
            boxes = image_proposals.proposal_boxes
            if self.proposal_append_gt:
                boxes = Boxes.cat([boxes, gt.gt_boxes.to(boxes.device)])
            matches, labels = self.proposal_matcher(pairwise_iou(gt.gt_boxes, boxes))
            foreground, bg = self.sampler(labels)
            keep = torch.cat([foreground, bg])
            classes = torch.full((len(keep),), background, dtype=torch.int64, device=boxes.device)
            gt_boxes = boxes.tensor[keep].clone()
            if len(gt) > 0:
                classes[: len(foreground)] = gt.gt_classes[matches[foreground]]
                gt_boxes[: len(foreground)] = gt.gt_boxes.tensor[matches[foreground]]
            sampled.append(
                Instances(
                    image_proposals.image_size,
                    proposal_boxes=boxes[keep],
                    gt_classes=classes,
                    gt_boxes=Boxes(gt_boxes),
                )
            )
        return sampled


def build_roi_heads(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The RoI heads named by ``MODEL.ROI_HEADS.NAME``."""
    return ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME).from_config(cfg, input_shape)
