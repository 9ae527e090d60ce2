"""Box heads: turn pooled RoI features into one vector per RoI (fc6, fc7 in the paper)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ...config import ConfigError
from ...utils.registry import Registry
from .svd import truncated_linear

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
        svd_ranks: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        problems = fc_head_problems(num_fc, fc_dim, dropout)
        if problems:
            raise ValueError("FastRCNNFCHead: " + "; ".join(problems))
        channels, height, width = input_shape
        size = channels * height * width
        self.fc_names = [f"fc{6 + i}" for i in range(num_fc)]
        self.svd_ranks = dict(svd_ranks or {})
        unknown = sorted(set(self.svd_ranks) - set(self.fc_names))
        if unknown:
            raise ValueError(
                f"FastRCNNFCHead: svd_ranks names {unknown}, but the layers are {self.fc_names}"
            )
        for name in self.fc_names:
            rank = self.svd_ranks.get(name)
            layer = (
                nn.Linear(size, fc_dim) if rank is None else truncated_linear(size, fc_dim, rank)
            )
            self.add_module(name, layer)
            size = fc_dim
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.output_size = fc_dim
        self._register_load_state_dict_pre_hook(self._refuse_other_layout)

    @classmethod
    def from_config(cls, cfg, input_shape: tuple[int, int, int]) -> FastRCNNFCHead:
        head = cfg.MODEL.ROI_BOX_HEAD
        problems = svd_rank_problems(head.SVD_RANKS, head.NUM_FC)
        if problems:
            raise ConfigError(problems[0])
        return cls(
            input_shape,
            num_fc=head.NUM_FC,
            fc_dim=head.FC_DIM,
            dropout=head.DROPOUT,
            svd_ranks=svd_ranks_by_layer(head.SVD_RANKS),
        )

    def _refuse_other_layout(self, state_dict, prefix: str, *args) -> None:
        """A checkpoint whose fc layers are factored where these are not (or the reverse)
        would load partly and silently leave random weights: refuse it, saying which key to
        set."""
        for name in self.fc_names:
            factored_key, plain_key = f"{prefix}{name}.0.weight", f"{prefix}{name}.weight"
            if name in self.svd_ranks and plain_key in state_dict:
                raise ValueError(
                    f"the checkpoint holds an unfactored {prefix}{name}, but the box head builds "
                    f"it as a truncated SVD of rank {self.svd_ranks[name]} "
                    "(MODEL.ROI_BOX_HEAD.SVD_RANKS); "
                    "compress the checkpoint with tools/compress_fc.py or empty SVD_RANKS"
                )
            if name not in self.svd_ranks and factored_key in state_dict:
                rank = state_dict[factored_key].shape[0]
                raise ValueError(
                    f"the checkpoint holds {prefix}{name} as a truncated SVD of rank {rank} "
                    f"(written by tools/compress_fc.py); load it with "
                    f"MODEL.ROI_BOX_HEAD.SVD_RANKS giving {name} rank {rank}"
                )

    def forward(self, pooled: Tensor) -> Tensor:
        x = pooled.flatten(1)
        for name in self.fc_names:
            x = self.dropout(getattr(self, name)(x).relu_())
        return x


def fc_head_problems(
    num_fc: int,
    fc_dim: int,
    dropout: float,
    names: tuple[str, str, str] = ("num_fc", "fc_dim", "dropout"),
) -> list[str]:
    """Why :class:`FastRCNNFCHead` cannot be built with these sizes, one message per problem
    naming each as ``names`` gives (the arguments; ``check_config`` gives the config keys);
    empty when it can."""
    problems = [
        f"{name} must be positive, got {value}"
        for name, value in zip(names[:2], (num_fc, fc_dim), strict=True)
        if value < 1
    ]
    if not 0.0 <= dropout < 1.0:
        problems.append(f"{names[2]} must be in [0, 1), got {dropout}")
    return problems


def svd_rank_problems(ranks: Sequence[int], num_fc: int) -> list[str]:
    """Why ``ranks`` (``MODEL.ROI_BOX_HEAD.SVD_RANKS``: a rank per fc layer, 0 for a whole
    one) cannot factor a head of ``num_fc`` fc layers; empty when they can. Whether a rank fits
    its layer's size is :func:`~.svd.truncated_linear`'s rule, checked as the layer is built."""
    ranks = [int(rank) for rank in ranks]
    if len(ranks) > num_fc or any(rank < 0 for rank in ranks):
        return [
            f"MODEL.ROI_BOX_HEAD.SVD_RANKS {ranks}: at most one rank per fully connected layer "
            f"(NUM_FC={num_fc}), each 0 (whole) or positive"
        ]
    return []


def svd_ranks_by_layer(ranks: Sequence[int]) -> dict[str, int]:
    """``MODEL.ROI_BOX_HEAD.SVD_RANKS`` (a rank per fc layer, 0: whole) as ``{"fc6": r, ...}``."""
    return {f"fc{6 + i}": int(rank) for i, rank in enumerate(ranks) if rank}


def build_box_head(cfg, input_shape: tuple[int, int, int]) -> nn.Module:
    """The box head named by ``MODEL.ROI_BOX_HEAD.NAME``."""
    return ROI_BOX_HEAD_REGISTRY.build(cfg.MODEL.ROI_BOX_HEAD.NAME, cfg, input_shape)
