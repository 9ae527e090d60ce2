"""Double-Head's box head (Wu et al., "Rethinking Classification and Localization for Object
Detection", CVPR 2020): fully connected layers for classification beside a convolutional head
for box regression, both reading the same pooled RoI features.

The paper finds the fc-head's scores track a proposal's IoU better, while the conv-head, sharing
its kernels over the RoI, regresses whole objects better; giving each task the head it prefers
beats either single head.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor, nn

from detkit.config import ConfigError, register_config_check
from detkit.modeling import ROI_BOX_HEAD_REGISTRY, FastRCNNFCHead

NORMS = ("BN", "")  # BatchNorm after every conv, or none (the convs then have biases)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Sequential:
    """A ``kernel_size`` conv keeping the map's size, then BatchNorm when ``norm == "BN"``.

    MSRA (He) initialisation, as ResNet's and detectron2's conv heads: ``fan_out`` normal.
    """
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if norm else nn.Sequential(conv)


class WideningBlock(nn.Module):
    """The conv-head's first block (the paper's Figure 5a): a 3x3 conv, a 1x1 conv to
    ``out_channels``, added to a 1x1 projection of the input, then ReLU. It raises the pooled
    maps' channels (256 from an FPN) to the conv-head's width (1024 in the paper)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "BN") -> None:
        super().__init__()
        self.conv1 = conv_norm(in_channels, in_channels, 3, norm)
        self.conv2 = conv_norm(in_channels, out_channels, 1, norm)
        self.shortcut = conv_norm(in_channels, out_channels, 1, norm)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x).relu_()) + self.shortcut(x)).relu_()


class BottleneckBlock(nn.Module):
    """ResNet's bottleneck (the paper's Figure 5b): 1x1 conv to ``channels // 4``, 3x3 conv,
    1x1 conv back to ``channels``, added to the input, then ReLU."""

    def __init__(self, channels: int, norm: str = "BN") -> None:
        super().__init__()
        width = channels // 4
        self.conv1 = conv_norm(channels, width, 1, norm)
        self.conv2 = conv_norm(width, width, 3, norm)
        self.conv3 = conv_norm(width, channels, 1, norm)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.conv3(self.conv2(self.conv1(x).relu_()).relu_())
        return (x + residual).relu_()


class ConvHead(nn.Module):
    """The conv-head: a :class:`WideningBlock` to ``conv_dim`` channels, ``num_blocks - 1``
    bottleneck blocks, then average pooling: ``[R, C, h, w]`` to ``[R, conv_dim]``."""

    def __init__(
        self, in_channels: int, conv_dim: int = 1024, num_blocks: int = 5, norm: str = "BN"
    ) -> None:
        super().__init__()
        if num_blocks < 1 or conv_dim < 4 or conv_dim % 4 or norm not in NORMS:
            raise ValueError(
                f"ConvHead: needs num_blocks >= 1, conv_dim a positive multiple of 4 (the "
                f"bottlenecks are conv_dim // 4 wide) and norm in {NORMS}; got {num_blocks}, "
                f"{conv_dim}, {norm!r}"
            )
        self.blocks = nn.Sequential(
            WideningBlock(in_channels, conv_dim, norm),
            *(BottleneckBlock(conv_dim, norm) for _ in range(num_blocks - 1)),
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.blocks(pooled).mean(dim=(2, 3))


@ROI_BOX_HEAD_REGISTRY.register()
class DoubleHead(FastRCNNFCHead):
    """``(fc features, conv features)`` per RoI: Fast R-CNN's fc layers (``fc6``, ``fc7``, …,
    inherited from :class:`FastRCNNFCHead` with their names, so the same weights load into them)
    for the class scores, a :class:`ConvHead` for the box deltas.

    ``output_size`` is the pair ``(fc_dim, conv_dim)``: ``FastRCNNOutputLayers`` then sizes
    ``cls_score`` from the first and ``bbox_pred`` from the second and feeds each its feature,
    so the classification loss trains only the fc layers and the box loss only the conv-head
    (and both the layers below the pooler).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_fc: int = 2,
        fc_dim: int = 1024,
        dropout: float = 0.0,
        num_conv_blocks: int = 5,
        conv_dim: int = 1024,
        norm: str = "BN",
    ) -> None:
        super().__init__(input_shape, num_fc=num_fc, fc_dim=fc_dim, dropout=dropout)
        self.conv_head = ConvHead(input_shape[0], conv_dim, num_conv_blocks, norm)
        self.output_size = (fc_dim, conv_dim)

    @classmethod
    def from_config(cls, cfg: DictConfig, input_shape: tuple[int, int, int]) -> DoubleHead:
        if "DOUBLE_HEAD" not in cfg.MODEL:
            raise ConfigError(
                "DoubleHead reads MODEL.DOUBLE_HEAD, which this config lacks: load it with "
                "defaults=add_double_head_config(get_default_config()) "
                "(projects/DoubleHead/train_net.py does)"
            )
        box, double = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.DOUBLE_HEAD
        return cls(
            input_shape,
            num_fc=box.NUM_FC,
            fc_dim=box.FC_DIM,
            dropout=box.DROPOUT,
            num_conv_blocks=double.NUM_CONV_BLOCKS,
            conv_dim=double.CONV_DIM,
            norm=double.NORM,
        )

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(pooled), self.conv_head(pooled)


@register_config_check
def double_head_config_problems(cfg: DictConfig) -> list[str]:
    """What a config that picks ``DoubleHead`` sets that the conv-head cannot be built with
    (nothing for other box heads); ``check_config`` runs it before any work starts."""
    if cfg.MODEL.ROI_BOX_HEAD.NAME != "DoubleHead" or "DOUBLE_HEAD" not in cfg.MODEL:
        return []
    double = cfg.MODEL.DOUBLE_HEAD
    problems = []
    if double.NUM_CONV_BLOCKS < 1:
        problems.append(
            f"MODEL.DOUBLE_HEAD.NUM_CONV_BLOCKS must be at least 1, got {double.NUM_CONV_BLOCKS}"
        )
    if double.CONV_DIM < 4 or double.CONV_DIM % 4:
        problems.append(
            "MODEL.DOUBLE_HEAD.CONV_DIM must be a positive multiple of 4 (the bottlenecks are "
            f"CONV_DIM // 4 wide), got {double.CONV_DIM}"
        )
    if double.NORM not in NORMS:
        problems.append(f"MODEL.DOUBLE_HEAD.NORM must be one of {NORMS}, got {double.NORM!r}")
    return problems
