"""Online hard example mining (Shrivastava, Gupta, Girshick, CVPR 2016) as a detkit sampler.

Each training step, a read-only forward of the RoI network (pooler, box head, predictor,
without gradient) scores every labelled RoI of every image by its current loss; per image the
RoIs are ranked by that loss, RoIs overlapping a harder one by more than an IoU threshold are
dropped (the paper's NMS, for diversity), and the hardest B/N remain. Only those go through the
RoI network again with gradient, so only they update the model. There is no foreground
fraction: the loss alone decides how many foreground RoIs an image contributes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from detkit.config import ConfigError, register_config_check
from detkit.modeling import SAMPLER_REGISTRY
from detkit.modeling.sampling import SamplingContext
from detkit.structures import Instances


def select_hard_examples(
    boxes: Tensor,
    losses: Tensor,
    budget: int,
    nms_thresh: float,
    classes: Tensor | None = None,
) -> Tensor:
    """Indices of the ``budget`` hardest RoIs of one image, hardest first.

    RoIs are ranked by ``losses`` (ties keep index order); greedy NMS over that ranking removes
    every RoI whose IoU with a harder kept one exceeds ``nms_thresh``, among all RoIs or, given
    ``classes``, among RoIs of the same class only; the first ``budget`` survivors are kept.
    """
    order = torch.sort(losses, descending=True, stable=True).indices
    # strictly decreasing scores in ranking order, so that NMS keeps exactly this order
    scores = -torch.arange(len(order), dtype=torch.float32, device=losses.device)
    ranked = boxes[order].float()
    if classes is None:
        kept = nms(ranked, scores, nms_thresh)
    else:
        kept = batched_nms(ranked, scores, classes[order], nms_thresh)
    return order[kept[:budget]]


@SAMPLER_REGISTRY.register()
class OHEMSampler:
    """Per image, the ``batch_size_per_image`` RoIs with the highest classification plus box
    regression loss under the current heads, after NMS at ``nms_thresh`` over the ranking
    (per label with ``nms_per_class``). Every foreground and background RoI is a candidate;
    ignored ones (``match_labels == -1``) never are, and :meth:`from_config` refuses a matcher
    that ignores any, as OHEM mines background from IoU 0 on.
    """

    def __init__(
        self, batch_size_per_image: int, nms_thresh: float = 0.7, nms_per_class: bool = False
    ) -> None:
        if batch_size_per_image <= 0 or not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(
                "OHEMSampler: batch_size_per_image must be positive and nms_thresh in [0, 1], "
                f"got {batch_size_per_image} and {nms_thresh}"
            )
        self.batch_size_per_image = batch_size_per_image
        self.nms_thresh = nms_thresh
        self.nms_per_class = nms_per_class

    @classmethod
    def from_config(cls, cfg) -> OHEMSampler:
        """Reads ``MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE`` and ``MODEL.OHEM.*``; raises
        :class:`~detkit.config.ConfigError` listing every setting OHEM cannot train with."""
        problems = ohem_config_problems(cfg)
        if problems:
            raise ConfigError("OHEMSampler: " + "; ".join(problems))
        ohem = cfg.MODEL.OHEM
        return cls(cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, ohem.NMS_THRESH, ohem.NMS_PER_CLASS)

    def __call__(self, proposals: list[Instances], context: SamplingContext) -> list[Tensor]:
        """Per image, the indices of its hardest RoIs, hardest first."""
        # ignored RoIs (gt_classes -1) have no loss to rank by
        candidates = [torch.nonzero(p.match_labels >= 0).flatten() for p in proposals]
        rois = [p[index] for p, index in zip(proposals, candidates, strict=True)]
        return [
            index[
                select_hard_examples(
                    image.proposal_boxes.tensor,
                    losses,
                    self.batch_size_per_image,
                    self.nms_thresh,
                    image.gt_classes if self.nms_per_class else None,
                )
            ]
            for image, index, losses in zip(
                rois, candidates, _per_image_losses(rois, context), strict=True
            )
        ]


def _per_image_losses(rois: list[Instances], context: SamplingContext) -> list[Tensor]:
    """Per image, each RoI's classification plus box regression loss from one read-only forward
    over every image's RoIs (none when no image has a RoI)."""
    counts = [len(image) for image in rois]
    if sum(counts) == 0:
        return [torch.zeros(0, device=image.match_labels.device) for image in rois]
    losses = context.roi_losses(rois)
    return list((losses["loss_cls"] + losses["loss_box_reg"]).split(counts))


@register_config_check
def ohem_config_problems(cfg) -> list[str]:
    """What a config that picks ``OHEMSampler`` sets that OHEM cannot train with (nothing for
    other samplers); ``check_config`` runs it before any work starts."""
    if cfg.MODEL.ROI_HEADS.SAMPLER != "OHEMSampler":
        return []
    if "OHEM" not in cfg.MODEL:
        return [
            "OHEMSampler: the config has no MODEL.OHEM keys; load it over "
            "ohem.add_ohem_config(get_default_config()), as projects/OHEM/train_net.py does"
        ]
    heads, ohem = cfg.MODEL.ROI_HEADS, cfg.MODEL.OHEM
    problems = []
    if -1 in heads.IOU_LABELS:
        problems.append(
            f"MODEL.ROI_HEADS.IOU_THRESHOLDS {list(heads.IOU_THRESHOLDS)} with IOU_LABELS "
            f"{list(heads.IOU_LABELS)} ignore some RoIs (label -1), but OHEM mines among all "
            "of them, background from IoU 0 (the paper's BG_THRESH_LO = 0); give no band "
            "the label -1, e.g. IOU_THRESHOLDS: [0.5] with IOU_LABELS: [0, 1]"
        )
    if heads.BATCH_SIZE_PER_IMAGE <= 0:
        problems.append(
            f"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE must be positive, got "
            f"{heads.BATCH_SIZE_PER_IMAGE}"
        )
    if not 0.0 <= ohem.NMS_THRESH <= 1.0:
        problems.append(f"MODEL.OHEM.NMS_THRESH must be in [0, 1], got {ohem.NMS_THRESH}")
    return problems
