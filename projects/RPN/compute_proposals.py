"""Writes the proposals a trained RPN makes for every image of a dataset, as a proposal file
Fast R-CNN reads (detectron2's pickle layout: ids, boxes, objectness logits, bbox_mode).

    python projects/RPN/compute_proposals.py --config-file projects/RPN/configs/shapes_rpn.yaml \\
        --dataset shapes_val --out output/rpn_shapes/proposals/shapes_val.pkl \\
        [--num-processes N] MODEL.WEIGHTS=output/rpn_shapes/model_final.pth [KEY=VALUE ...]

``--dataset`` is any registered dataset or one the config declares (``DATASETS.REGISTER``); its
classes need not be the config's (the RPN has none). The images are read and resized as for
evaluation (``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``); the proposals are in the original
image's pixels, at most ``MODEL.RPN.POST_NMS_TOPK_TEST`` per image, best first. It runs on
``MODEL.DEVICE`` (``auto``: the GPU when there is one) with a progress bar; ``--num-processes N``
shares the images among N processes (one per GPU, or CPU processes sharing the cores), the first
gathering and writing the file, which appears only when complete.
"""

from __future__ import annotations

import argparse
import sys

import rpn  # registers the project's parts

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, get_default_config
from detkit.data import (
    DatasetCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detkit.data.loaders import evaluation_mapper
from detkit.engine.launch import launch
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.evaluation import inference_on_dataset
from detkit.modeling import build_model
from detkit.utils import comm
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.device import chosen_device
from detkit.utils.logger import setup_logger

DEFAULTS = rpn.add_rpn_config(get_default_config())


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the RPN's config (MODEL.WEIGHTS: its weights)")
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument(
        "--out", type=output_file, required=True, help="the proposal file to write (.pkl)"
    )
    parser.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="processes sharing the images: one per GPU, or CPU processes (default 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("compute_proposals", argument_parser(), compute, argv)


def compute(args: argparse.Namespace) -> int:
    """Checks the config, weights and dataset here, then writes the file in
    ``args.num_processes`` processes."""
    setup_logger()
    cfg = setup_config(args, DEFAULTS)
    if cfg.MODEL.META_ARCHITECTURE != "ProposalNetwork":
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE} is not ProposalNetwork; "
            "give an RPN config, such as projects/RPN/configs/shapes_rpn.yaml"
        )
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("give the trained RPN's weights as MODEL.WEIGHTS=FILE")
    DatasetCatalog.check_registered(args.dataset)
    device = chosen_device(cfg.MODEL.DEVICE)
    launch(
        write_proposals,
        args.num_processes,
        args=(args,),
        backend="nccl" if device.startswith("cuda") else "gloo",
    )
    print(f"wrote the proposals of {args.dataset} to {args.out}")
    return 0


def write_proposals(args: argparse.Namespace) -> None:
    """One process: the RPN over its share of the dataset's images; the main process writes."""
    setup_logger(rank=comm.get_rank())
    cfg = setup_config(args, DEFAULTS)
    model = build_model(cfg)
    DetectionCheckpointer(model, allow_partial=False).load(cfg.MODEL.WEIGHTS)
    dicts = get_detection_dataset_dicts([args.dataset])
    loader = build_detection_test_loader(
        dicts, mapper=evaluation_mapper(cfg), num_workers=cfg.DATALOADER.NUM_WORKERS
    )
    image_ids = [record["image_id"] for record in dicts]
    inference_on_dataset(model, loader, rpn.ProposalFileWriter(args.out, image_ids))


if __name__ == "__main__":
    sys.exit(main())
