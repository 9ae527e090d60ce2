"""What every meta-architecture over a backbone shares: the pixel statistics, and the images
normalised and padded into one batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from ..backbone import Backbone


class BackboneModel(nn.Module):
    """A backbone over the whole image, ``self.backbone``, and the images it takes: normalised
    by ``pixel_mean`` / ``pixel_std`` and padded to its ``size_divisibility``
    (:meth:`preprocess_images`), in channels-last order when ``channels_last``. Fast R-CNN and a
    project's proposal network add their heads to it."""

    def __init__(
        self,
        backbone: Backbone,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(
                f"{type(self).__name__}: 3 pixel means and stds needed, got {pixel_mean}, "
                f"{pixel_std}"
            )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_images(self, batched_inputs: list[dict]) -> Tensor:
        """The inputs' images as one normalised, padded batch (:func:`batch_images`)."""
        return batch_images(
            [x["image"] for x in batched_inputs],
            self.pixel_mean,
            self.pixel_std,
            self.backbone.size_divisibility,
            self.channels_last,
        )


def batch_images(
    images: Sequence[Tensor],
    pixel_mean: Tensor,
    pixel_std: Tensor,
    size_divisibility: int = 0,
    channels_last: bool = False,
) -> Tensor:
    """``images`` (``[3, H, W]`` each) normalised by ``pixel_mean``/``pixel_std`` (``[3, 1, 1]``,
    on the device the batch is made on), zero-padded at the bottom and right to one batch whose
    height and width are multiples of ``size_divisibility`` (the backbone's, when it has one);
    in channels-last memory order when ``channels_last`` (the convolutions, and RoI pooling,
    then run in that order, which is faster on CPUs and on GPUs under mixed precision). Every
    meta-architecture over a :class:`~detkit.modeling.Backbone` prepares its images so."""
    normalised = [
        (image.to(pixel_mean.device).float() - pixel_mean) / pixel_std for image in images
    ]
    divisor = max(size_divisibility, 1)
    height = math.ceil(max(image.shape[1] for image in normalised) / divisor) * divisor
    width = math.ceil(max(image.shape[2] for image in normalised) / divisor) * divisor
    batch = torch.stack(
        [functional.pad(i, (0, width - i.shape[2], 0, height - i.shape[1])) for i in normalised]
    )
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
