"""Fast R-CNN's sibling outputs: class scores and class-specific box deltas, their loss and the
detections they decode to (paper §2.2, §2.3, §3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional
from torchvision.ops import nms

from ...structures import Boxes, Instances
from ...utils.events import EventStorage, current_event_storage
from ..box_regression import Box2BoxTransform


class FastRCNNOutputLayers(nn.Module):
    """``cls_score`` (K + 1 classes, background last) and ``bbox_pred`` (4 deltas per class).

    ``input_size`` is the box head's ``output_size``: one width when the head gives one feature
    per RoI, or ``(classification width, regression width)`` when it gives a pair of features
    (a decoupled head such as Double-Head's); ``forward`` then takes the pair.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int],
        num_classes: int,
        box2box_transform: Box2BoxTransform,
        smooth_l1_beta: float = 1.0,
        loss_weight: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        cls_size, box_size = _feature_sizes(input_size)
        self.cls_score = nn.Linear(cls_size, num_classes + 1)
        self.bbox_pred = nn.Linear(box_size, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)  # the paper's initialisation
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    @classmethod
    def from_config(cls, cfg, input_size: int | tuple[int, int]) -> FastRCNNOutputLayers:
        heads, box = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
        return cls(
            input_size,
            heads.NUM_CLASSES,
            Box2BoxTransform(box.BBOX_REG_WEIGHTS),
            smooth_l1_beta=box.SMOOTH_L1_BETA,
            loss_weight=box.LOSS_WEIGHT,
            score_thresh=heads.SCORE_THRESH_TEST,
            nms_thresh=heads.NMS_THRESH_TEST,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    def forward(self, x: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Class scores ``[R, K + 1]`` and box deltas ``[R, 4K]`` of the box head's output."""
        cls_features, box_features = x if isinstance(x, tuple) else (x, x)
        return self.cls_score(cls_features), self.bbox_pred(box_features)

    def losses(
        self,
        scores: Tensor,
        deltas: Tensor,
        proposals: list[Instances],
        reduction: str = "mean",
    ) -> dict[str, Tensor]:
        """Cross-entropy over all RoIs plus ``loss_weight`` x smooth-L1 over the foreground
        ones (``gt_classes`` below K).

        ``reduction="mean"``: both summed and divided by the number of RoIs (the paper's
        mini-batch loss). ``"none"``: one value per RoI, ``[R]`` each (the box loss summed over
        the 4 deltas, 0 for background; both 0 for an ignored RoI, ``gt_classes == -1``), what
        loss-based samplers such as OHEM rank RoIs by.
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"losses: reduction must be 'mean' or 'none', got {reduction!r}")
        gt_classes = torch.cat([p.gt_classes for p in proposals])
        proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = torch.cat([p.gt_boxes.tensor for p in proposals])
        # an ignored RoI (gt_classes -1, see StandardROIHeads.label_proposals) has no loss
        loss_cls = functional.cross_entropy(
            scores, gt_classes, reduction=reduction, ignore_index=-1
        )
        foreground = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes)).flatten()
        predicted = deltas.view(len(deltas), self.num_classes, 4)[
            foreground, gt_classes[foreground]
        ]
        targets = self.box2box_transform.get_deltas(
            proposal_boxes[foreground], gt_boxes[foreground]
        )
        if reduction == "none":
            per_delta = functional.smooth_l1_loss(
                predicted, targets, beta=self.smooth_l1_beta, reduction="none"
            )
            loss_box = deltas.new_zeros(len(gt_classes))
            loss_box[foreground] = self.loss_weight * per_delta.sum(dim=1)
            return {"loss_cls": loss_cls, "loss_box_reg": loss_box}
        storage = current_event_storage()
        if storage is not None:
            put_classification_metrics(storage, scores, gt_classes, self.num_classes)
        if gt_classes.numel() == 0:  # no RoI at all: zero losses (the mean would be NaN)
            loss_cls = scores.sum() * 0.0
        loss_box = functional.smooth_l1_loss(
            predicted, targets, beta=self.smooth_l1_beta, reduction="sum"
        )
        loss_box = self.loss_weight * loss_box / max(gt_classes.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box}

    def inference(
        self, scores: Tensor, deltas: Tensor, proposals: list[Instances]
    ) -> list[Instances]:
        """Per image: softmax, class-specific boxes clipped to the image, score threshold,
        per-class NMS, the best ``detections_per_image``."""
        counts = [p.proposal_boxes.tensor.shape[0] for p in proposals]
        results = []
        for image_scores, image_deltas, image in zip(
            scores.split(counts), deltas.split(counts), proposals, strict=True
        ):
            results.append(self._detect(image_scores, image_deltas, image))
        return results

    def _detect(self, scores: Tensor, deltas: Tensor, proposals: Instances) -> Instances:
        probs = functional.softmax(scores, dim=1)[:, : self.num_classes]
        boxes = self.box2box_transform.apply_deltas(deltas, proposals.proposal_boxes.tensor)
        boxes = Boxes(boxes.view(-1, 4))
        boxes.clip(proposals.image_size)
        boxes = boxes.tensor.view(-1, self.num_classes, 4)
        keep = torch.nonzero(probs > self.score_thresh)  # (roi, class) pairs
        boxes, probs, classes = (
            boxes[keep[:, 0], keep[:, 1]],
            probs[keep[:, 0], keep[:, 1]],
            keep[:, 1],
        )
        kept = per_class_nms(boxes, probs, classes, self.nms_thresh, max(proposals.image_size))
        kept = kept[: self.detections_per_image]
        return Instances(
            proposals.image_size,
            pred_boxes=Boxes(boxes[kept]),
            scores=probs[kept],
            pred_classes=classes[kept],
        )


def per_class_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, threshold: float, extent: float
) -> Tensor:
    """Indices of the boxes that non-maximum suppression keeps within each class, best first:
    one NMS over the boxes shifted apart by class (``extent`` bounds every coordinate, e.g.
    the image's larger side for clipped boxes), as torchvision's ``batched_nms`` does, without
    its data-dependent branches so that the model traces (``torch.export``)."""
    offsets = classes.to(boxes.dtype) * (float(extent) + 1.0)
    return nms(boxes + offsets[:, None], scores, threshold)


@torch.no_grad()
def put_classification_metrics(
    storage: EventStorage, scores: Tensor, gt_classes: Tensor, num_classes: int
) -> None:
    """The mini-batch's classification accuracy over its labelled RoIs and over the foreground
    ones, under detectron2's names (``fast_rcnn/cls_accuracy``, ``fast_rcnn/fg_cls_accuracy``);
    an accuracy over no RoI is recorded as 0. (The RoIs per image are recorded where they are
    sampled, :meth:`StandardROIHeads.label_and_sample_proposals`.)"""
    labelled = gt_classes >= 0
    foreground = labelled & (gt_classes < num_classes)
    correct = scores.argmax(dim=1) == gt_classes
    for name, chosen in (("cls_accuracy", labelled), ("fg_cls_accuracy", foreground)):
        count = int(chosen.sum())
        storage.put_scalar(
            f"fast_rcnn/{name}", float(correct[chosen].sum()) / count if count else 0.0
        )


def _feature_sizes(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(classification, regression)`` input widths from a box head's ``output_size``."""
    sizes = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(sizes) != 2 or not all(isinstance(n, int) and n > 0 for n in sizes):
        raise ValueError(
            "FastRCNNOutputLayers: input_size must be a positive int or a pair of them "
            f"(classification, regression), got {input_size!r}"
        )
    return sizes
