"""BatchNorm frozen at its loaded statistics and affine parameters."""

from __future__ import annotations

from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that always normalises with its running statistics and never trains.

    Detection batches are too small for batch statistics, so pretrained backbones keep theirs.
    Unlike a hand-written ``x * scale + shift``, this runs the very kernel of an eval-mode
    ``BatchNorm2d``, so a backbone computes exactly what the torchvision model it was loaded
    from computes in eval mode. State-dict keys are ``BatchNorm2d``'s.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)
