"""``ProposalNetwork``: a backbone and an RPN, trained alone to make object proposals
(detectron2's meta-architecture of the same name)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from detkit.modeling import (
    META_ARCH_REGISTRY,
    Backbone,
    BackboneModel,
    build_backbone,
    rescale_detections,
)

from .proposal_generator import RPN


@META_ARCH_REGISTRY.register()
class ProposalNetwork(BackboneModel):
    """Backbone over the whole image (:class:`~detkit.modeling.BackboneModel`: the images
    normalised and padded as for Fast R-CNN), :class:`~rpn.proposal_generator.RPN` over its maps.

    ``forward`` takes detkit's input dicts (``"image"``, in training ``"instances"`` with
    ``gt_boxes``, optionally ``"height"``/``"width"``; no ``"proposals"``). Training returns
    ``{"loss_rpn_cls", "loss_rpn_loc"}``; evaluation one ``{"proposals":
    Instances(proposal_boxes, objectness_logits)}`` per image, boxes in the pixels of
    ``height`` x ``width`` (the original image) when given, best first.
    """

    def __init__(
        self,
        backbone: Backbone,
        proposal_generator: RPN,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        super().__init__(backbone, pixel_mean, pixel_std, channels_last)
        self.proposal_generator = proposal_generator

    @classmethod
    def from_config(cls, cfg) -> ProposalNetwork:
        backbone = build_backbone(cfg)
        return cls(
            backbone,
            RPN.from_config(cfg, backbone.output_shape()),
            cfg.MODEL.PIXEL_MEAN,
            cfg.MODEL.PIXEL_STD,
            channels_last=cfg.MODEL.CHANNELS_LAST,
        )

    def forward(self, batched_inputs: list[dict]) -> dict[str, Tensor] | list[dict]:
        features = self.backbone(self.preprocess_images(batched_inputs))
        image_sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("ProposalNetwork: every training input needs its 'instances'")
            targets = [x["instances"].to(self.device) for x in batched_inputs]
            return self.proposal_generator(image_sizes, features, targets)
        proposals = self.proposal_generator(image_sizes, features)
        return [
            {"proposals": rescale_detections(p, x.get("height"), x.get("width"), "proposal_boxes")}
            for p, x in zip(proposals, batched_inputs, strict=True)
        ]


def output_proposals(owner: str, image: dict, output: dict) -> tuple[np.ndarray, np.ndarray]:
    """The proposals in one model ``output`` (for the input dict ``image``) as float32 arrays
    on the CPU, boxes ``[n, 4]`` and objectness logits ``[n]``; an error naming ``owner`` and
    the image when the output holds none (the model is not a proposal network)."""
    if "proposals" not in output:
        raise KeyError(
            f"{owner}: the output for image {image.get('image_id')!r} has no 'proposals' "
            f"(keys: {sorted(output)}); is the model a ProposalNetwork?"
        )
    proposals = output["proposals"].to("cpu")
    return (
        proposals.proposal_boxes.tensor.detach().float().numpy(),
        proposals.objectness_logits.detach().float().numpy(),
    )
