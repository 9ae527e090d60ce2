"""Compresses a trained detector's fully connected box-head layers by truncated SVD (Fast R-CNN
§3.1) and writes a checkpoint that loads with the matching ``MODEL.ROI_BOX_HEAD.SVD_RANKS``.

    python tools/compress_fc.py --config-file configs/shapes/fast_rcnn.yaml \\
        --ranks fc6=64 fc7=32 --output output/shapes_svd.pth \\
        MODEL.WEIGHTS=output/shapes_fast_rcnn/model_final.pth

Each named layer ``W`` (``in → out``) becomes ``Σ_r V_rᵀ`` (``in → r``, no bias) followed by
``U_r`` (``r → out``, the original bias), with no fine-tuning, as in the paper (VGG16: fc6 1024,
fc7 256). The command prints each layer's relative approximation error and the overrides that
evaluate the compressed model. Weights that leave part of the model uninitialised (another
model's, another layout) are refused, as ``train_net --eval-only`` refuses them: factoring random
layers would give a checkpoint that loads completely and evaluates as a random model.
``--allow-partial-weights`` uses them anyway.
"""

from __future__ import annotations

import argparse
import sys

import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.modeling import build_model
from detkit.modeling.roi_heads.svd import compress_fc_layers
from detkit.utils.arguments import output_file
from detkit.utils.file_io import write_atomically


def parse_ranks(words: list[str]) -> dict[str, int]:
    """``["fc6=1024", "fc7=256"]`` as ``{"fc6": 1024, "fc7": 256}``."""
    ranks = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--ranks: {word!r} is not LAYER=RANK with a positive rank")
        ranks[name] = int(value)
    return ranks


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the model's config")
    parser.add_argument(
        "--ranks", nargs="+", required=True, metavar="LAYER=RANK", help="e.g. fc6=1024 fc7=256"
    )
    parser.add_argument(
        "--output", type=output_file, required=True, metavar="FILE", help="the checkpoint to write"
    )
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="compress weights that leave part of the model uninitialised (refused by default)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("compress_fc", argument_parser(), compress, argv)


def compress(args: argparse.Namespace) -> int:
    ranks = parse_ranks(args.ranks)
    args.opts = [*args.opts, "MODEL.DEVICE=cpu"]  # set before set-up, after which cfg is read-only
    cfg = setup_config(args)
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("give the trained weights as MODEL.WEIGHTS=FILE")
    if list(cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS):
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD.SVD_RANKS must be empty: the tool starts from the uncompressed "
            "model"
        )
    model = build_model(cfg)
    checkpointer = DetectionCheckpointer(model, allow_partial=args.allow_partial_weights)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    head = model.roi_heads.box_head
    try:
        errors = compress_fc_layers(head, ranks)
    except ValueError as error:  # a layer the head does not have, a rank it cannot take
        raise ConfigError(f"--ranks: {error}") from None
    state = {"model": model.state_dict()}
    write_atomically(args.output, lambda file: torch.save(state, file))
    for name, error in errors.items():
        print(f"{name}: rank {ranks[name]}, relative error {error:.4f}")
    layer_ranks = ",".join(str(head.svd_ranks.get(name, 0)) for name in head.fc_names)
    print(f"wrote {args.output}; evaluate it with the same config and")
    print(f"  MODEL.ROI_BOX_HEAD.SVD_RANKS=[{layer_ranks}] MODEL.WEIGHTS={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
