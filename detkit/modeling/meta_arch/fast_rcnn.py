"""The Fast R-CNN meta-architecture: backbone over the whole image, RoI heads over proposals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from ...structures import Boxes, Instances
from ...utils.registry import Registry
from ..backbone import Backbone, build_backbone
from ..roi_heads import build_roi_heads

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Meta-architectures; ``build_model(cfg)`` builds the one named by
``MODEL.META_ARCHITECTURE``."""


@META_ARCH_REGISTRY.register()
class FastRCNN(nn.Module):
    """Fast R-CNN (Girshick 2015) over precomputed proposals.

    ``forward`` takes a list of dicts, one per image: ``"image"`` (``[3, H, W]``, uint8 or float,
    channels in ``MODEL.INPUT_FORMAT`` order), ``"proposals"`` (``Instances`` with
    ``proposal_boxes``), in training ``"instances"`` (``gt_boxes``, ``gt_classes``), and
    optionally ``"height"``/``"width"``, the size to report detections at. Training returns
    ``{"loss_cls", "loss_box_reg"}``; evaluation one ``{"instances": Instances(pred_boxes,
    scores, pred_classes)}`` per image. The test image pyramid (``TEST.MIN_SIZES``) is not a
    mode of it but a wrapper, :class:`~detkit.modeling.PyramidInference`.
    """

    def __init__(
        self,
        backbone: Backbone,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last
        self.roi_heads = roi_heads
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(
                f"FastRCNN: 3 pixel means and stds needed, got {pixel_mean}, {pixel_std}"
            )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> FastRCNN:
        backbone = build_backbone(cfg)
        return cls(
            backbone,
            build_roi_heads(cfg, backbone.output_shape()),
            cfg.MODEL.PIXEL_MEAN,
            cfg.MODEL.PIXEL_STD,
            channels_last=cfg.MODEL.CHANNELS_LAST,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]) -> dict[str, Tensor] | list[dict]:
        images = self.preprocess_images(batched_inputs)
        features = self.backbone(images)
        proposals = [x["proposals"].to(self.device) for x in batched_inputs]
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("FastRCNN: every training input needs its 'instances'")
            targets = [x["instances"].to(self.device) for x in batched_inputs]
            return self.roi_heads(features, proposals, targets)
        results = self.roi_heads(features, proposals)
        return [
            {"instances": rescale_detections(r, x.get("height"), x.get("width"))}
            for r, x in zip(results, batched_inputs, strict=True)
        ]

    def preprocess_images(self, batched_inputs: list[dict]) -> Tensor:
        """Normalised images, zero-padded at the bottom and right to one batch whose height and
        width are multiples of the backbone's ``size_divisibility`` (when it has one); in
        channels-last memory order when ``channels_last`` (the convolutions, and RoI pooling,
        then run in that order, which is faster on CPUs and on GPUs under mixed precision)."""
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        divisor = max(self.backbone.size_divisibility, 1)
        height = math.ceil(max(image.shape[1] for image in images) / divisor) * divisor
        width = math.ceil(max(image.shape[2] for image in images) / divisor) * divisor
        batch = torch.stack(
            [functional.pad(i, (0, width - i.shape[2], 0, height - i.shape[1])) for i in images]
        )
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


def rescale_detections(instances: Instances, height: int | None, width: int | None) -> Instances:
    """``instances`` with boxes scaled from the model's input size to ``height`` x ``width``
    (unchanged when not given) and clipped to it."""
    if height is None or width is None:
        return instances
    input_height, input_width = instances.image_size
    scale = instances.pred_boxes.tensor.new_tensor(
        [width / input_width, height / input_height, width / input_width, height / input_height]
    )
    boxes = Boxes(instances.pred_boxes.tensor * scale)
    boxes.clip((height, width))
    result = Instances((height, width), **instances.get_fields())
    result.pred_boxes = boxes
    return result
