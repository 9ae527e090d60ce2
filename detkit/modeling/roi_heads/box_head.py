"""Box heads: turn pooled RoI features into one vector per RoI (fc6, fc7 in the paper)."""

from __future__ import annotations

from torch import Tensor, nn

from ...utils.registry import Registry

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """Box heads; ``cls.from_config(cfg, input_shape)`` builds one."""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNFCHead(nn.Module):
    """Flatten, then ``num_fc`` fully connected layers (``fc6``, ``fc7``, …) with ReLU and dropout.

    ``input_shape`` is the pooled feature's ``(channels, height, width)``. The layer names let
    VGG16's ImageNet classifier (fc6, fc7) initialise the head, as in the paper.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_fc: int = 2,
        fc_dim: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_fc < 1 or fc_dim < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"FastRCNNFCHead: needs num_fc >= 1, fc_dim >= 1, dropout in [0, 1); got "
                f"{num_fc}, {fc_dim}, {dropout}"
            )
        channels, height, width = input_shape
        size = channels * height * width
        self.fc_names = [f"fc{6 + i}" for i in range(num_fc)]
        for name in self.fc_names:
            self.add_module(name, nn.Linear(size, fc_dim))
            size = fc_dim
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.output_size = fc_dim

    @classmethod
    def from_config(cls, cfg, input_shape: tuple[int, int, int]) -> FastRCNNFCHead:
        head = cfg.MODEL.ROI_BOX_HEAD
        return cls(input_shape, num_fc=head.NUM_FC, fc_dim=head.FC_DIM, dropout=head.DROPOUT)

    def forward(self, pooled: Tensor) -> Tensor:
        x = pooled.flatten(1)
        for name in self.fc_names:
            x = self.dropout(getattr(self, name)(x).relu_())
        return x


def build_box_head(cfg, input_shape: tuple[int, int, int]) -> nn.Module:
    """The box head named by ``MODEL.ROI_BOX_HEAD.NAME``."""
    return ROI_BOX_HEAD_REGISTRY.build(cfg.MODEL.ROI_BOX_HEAD.NAME, cfg, input_shape)
