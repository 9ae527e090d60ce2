"""The Fast R-CNN meta-architecture: backbone over the whole image, RoI heads over proposals."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ...structures import Boxes, Instances
from ...utils.registry import Registry
from ..backbone import Backbone, build_backbone
from ..roi_heads import build_roi_heads
from .backbone_model import BackboneModel

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Meta-architectures; ``build_model(cfg)`` builds the one named by
``MODEL.META_ARCHITECTURE``."""


@META_ARCH_REGISTRY.register()
class FastRCNN(BackboneModel):
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
        super().__init__(backbone, pixel_mean, pixel_std, channels_last)
        self.roi_heads = roi_heads

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


def rescale_detections(
    instances: Instances, height: int | None, width: int | None, box_field: str = "pred_boxes"
) -> Instances:
    """``instances`` with the boxes of ``box_field`` (detections' ``pred_boxes``, a proposal
    network's ``proposal_boxes``) scaled from the model's input size to ``height`` x ``width``
    (unchanged when not given) and clipped to it."""
    if height is None or width is None:
        return instances
    input_height, input_width = instances.image_size
    boxes = instances.get(box_field).tensor
    scale = boxes.new_tensor(
        [width / input_width, height / input_height, width / input_width, height / input_height]
    )
    boxes = Boxes(boxes * scale)
    boxes.clip((height, width))
    result = Instances((height, width), **instances.get_fields())
    result.set(box_field, boxes)
    return result
