"""Fast R-CNN built from torchvision's parts with a detkit model's weights: the peer that
tools/benchmark.py times detkit against.

The peer shares detkit's trunk (a copy of its backbone, run in NCHW as torchvision's detection
models run) and gets detkit's fc layers and predictor copied into torchvision's ``RoIHeads``
with ``TwoMLPHead`` and ``FastRCNNPredictor`` of the same width, pooling with
``ops.roi_pool``, ``ops.roi_align`` or ``ops.MultiScaleRoIAlign`` as the config's pooler does,
with the config's sampling sizes, box-regression weights and test thresholds. Given the same
image and proposals it detects what detkit detects (tests/tools/test_torchvision_peer.py).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool
from torchvision.ops.poolers import LevelMapper


class SingleMapPooler(nn.Module):
    """torchvision's ``roi_pool`` or ``roi_align`` over one named map, in ``RoIHeads``'
    ``box_roi_pool`` interface ``(features, proposals, image_shapes)``."""

    def __init__(self, name: str, op: Callable[..., Tensor]) -> None:
        super().__init__()
        self.name = name
        self.op = op

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> Tensor:
        return self.op(features[self.name], proposals)


class AlignedMultiScaleRoIAlign(nn.Module):
    """``roi_align(aligned=True)`` per level, levels by torchvision's ``LevelMapper``: what
    ``MultiScaleRoIAlign`` does, with the half-pixel offset it lacks."""

    def __init__(self, names: list[str], scales: list[float], output_size, sampling_ratio: int):
        super().__init__()
        self.names, self.scales = names, scales
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        levels = [round(-torch.log2(torch.tensor(s)).item()) for s in scales]
        self.mapper = LevelMapper(levels[0], levels[-1])

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> Tensor:
        levels = self.mapper(proposals)
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(proposals)]
        )
        first = features[self.names[0]]
        output = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (name, scale) in enumerate(zip(self.names, self.scales, strict=True)):
            index = torch.nonzero(levels == level).flatten()
            output[index] = roi_align(
                features[name],
                rois[index],
                self.output_size,
                scale,
                self.sampling_ratio,
                aligned=True,
            )
        return output


class TorchvisionFastRCNN(nn.Module):
    """Fast R-CNN from torchvision's parts: a backbone returning named maps, then ``RoIHeads``.
    Images are normalised and padded as detkit does; labels are 1..K (0 is background)."""

    def __init__(self, backbone: nn.Module, roi_heads: RoIHeads, mean: Tensor, std: Tensor):
        super().__init__()
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", mean.clone())
        self.register_buffer("pixel_std", std.clone())

    def forward(self, images: list[Tensor], proposals: list[Tensor], targets=None):
        normalised = [(image.float() - self.pixel_mean) / self.pixel_std for image in images]
        divisor = max(getattr(self.backbone, "size_divisibility", 0), 1)
        height = -(-max(i.shape[1] for i in normalised) // divisor) * divisor
        width = -(-max(i.shape[2] for i in normalised) // divisor) * divisor
        batch = normalised[0].new_zeros((len(images), 3, height, width))
        for slot, image in zip(batch, normalised, strict=True):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        features = OrderedDict(self.backbone(batch))
        sizes = [tuple(image.shape[1:]) for image in images]
        detections, losses = self.roi_heads(features, proposals, sizes, targets)
        return losses if self.training else detections


def peer_pooler(cfg, heads) -> nn.Module:
    """torchvision's pooling matching ``heads.pooler`` (detkit's)."""
    box = cfg.MODEL.ROI_BOX_HEAD
    names, scales = heads.in_features, list(heads.pooler.scales)
    size, ratio = heads.pooler.output_size, box.POOLER_SAMPLING_RATIO
    kind = box.POOLER_TYPE
    if kind not in ("ROIPool", "ROIAlign", "ROIAlignV2"):
        raise ValueError(f"no torchvision counterpart of POOLER_TYPE {kind!r}")
    if len(names) == 1:
        scale = scales[0]
        if kind == "ROIPool":
            return SingleMapPooler(names[0], lambda x, b: roi_pool(x, b, size, scale))
        aligned = kind == "ROIAlignV2"
        return SingleMapPooler(
            names[0], lambda x, b: roi_align(x, b, size, scale, ratio, aligned=aligned)
        )
    if kind == "ROIAlign":
        return MultiScaleRoIAlign(names, size, ratio)
    if kind == "ROIAlignV2":
        return AlignedMultiScaleRoIAlign(names, scales, size, ratio)
    raise ValueError("torchvision pools several maps with RoIAlign only, not ROIPool")


def build_peer(cfg, model: nn.Module) -> TorchvisionFastRCNN:
    """The torchvision-built counterpart of ``model`` (a detkit FastRCNN with an unfactored
    ``FastRCNNFCHead``), holding copies of its weights."""
    heads, box = model.roi_heads, cfg.MODEL.ROI_BOX_HEAD
    head = heads.box_head
    if box.NAME != "FastRCNNFCHead" or len(head.fc_names) != 2 or head.svd_ranks:
        raise ValueError("the peer is built for an unfactored two-layer FastRCNNFCHead only")
    mlp = TwoMLPHead(head.fc6.in_features, head.output_size)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    predictor = FastRCNNPredictor(head.output_size, num_classes + 1)
    iou = cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS
    roi_heads = RoIHeads(
        peer_pooler(cfg, heads),
        mlp,
        predictor,
        fg_iou_thresh=iou[-1],
        bg_iou_thresh=iou[-1],  # torchvision has no lower background bound (see the docs)
        batch_size_per_image=cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        positive_fraction=cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
    )
    backbone = copy.deepcopy(model.backbone).to(memory_format=torch.contiguous_format)
    peer = TorchvisionFastRCNN(backbone, roi_heads, model.pixel_mean, model.pixel_std)
    copy_head_weights(model, peer)
    return peer.to(model.device)


@torch.no_grad()
def copy_head_weights(model: nn.Module, peer: TorchvisionFastRCNN) -> None:
    """detkit's fc6, fc7 and predictor into the peer: torchvision puts background first in the
    class scores and has a (never used) box for it, detkit puts background last."""
    head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    peer.roi_heads.box_head.fc6.load_state_dict(head.fc6.state_dict())
    peer.roi_heads.box_head.fc7.load_state_dict(head.fc7.state_dict())
    cls_score, bbox_pred = (
        peer.roi_heads.box_predictor.cls_score,
        peer.roi_heads.box_predictor.bbox_pred,
    )
    order = [predictor.num_classes, *range(predictor.num_classes)]
    cls_score.weight.copy_(predictor.cls_score.weight[order])
    cls_score.bias.copy_(predictor.cls_score.bias[order])
    bbox_pred.weight.zero_()
    bbox_pred.bias.zero_()
    bbox_pred.weight[4:].copy_(predictor.bbox_pred.weight)
    bbox_pred.bias[4:].copy_(predictor.bbox_pred.bias)

