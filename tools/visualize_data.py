"""Draws the ground truth (and optionally the proposals) of a config's training data as PNG files.

    python tools/visualize_data.py --config-file CONFIG.yaml --source annotation|dataloader
        --output DIR [--show-proposals [N]] [--num-images N] [--min-size 480]
        [KEY=VALUE | KEY VALUE ...]

``annotation`` shows the dataset dicts of ``DATASETS.TRAIN`` as they are loaded (on the images as
stored); ``dataloader`` shows them after the training mapper's transforms (resize, flip), as the
model sees them. Each image becomes ``DIR/<dataset>/<file stem>.png``. To check the labels and
boxes of a dataset, and the proposals training will sample from, before training on it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from detkit.data import DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from detkit.data.loaders import filter_images_without_objects
from detkit.data.mapper import read_record_image
from detkit.data.proposal_store import record_proposals
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.utils.arguments import output_folder, positive_int
from detkit.utils.errors import UserError
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.visualizer import (
    add_min_size_argument,
    draw_ground_truth,
    draw_proposals,
    enlarge,
)

ALL_PROPOSALS = 0  # --show-proposals without N (an N given must be positive)


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "a config naming DATASETS.TRAIN")
    parser.add_argument(
        "--source",
        required=True,
        choices=["annotation", "dataloader"],
        help="the dataset dicts as loaded, or after the training transforms",
    )
    parser.add_argument(
        "--output", type=output_folder, required=True, help="folder for the PNG files"
    )
    parser.add_argument(
        "--show-proposals",
        nargs="?",
        type=positive_int,
        const=ALL_PROPOSALS,
        metavar="N",
        help="draw the proposals of DATASETS.PROPOSAL_FILES_TRAIN too (the N best; all without N)",
    )
    parser.add_argument(
        "--num-images", type=positive_int, help="draw the first N images only (default: all)"
    )
    add_min_size_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("visualize_data", argument_parser(), visualize, argv)


def visualize(args: argparse.Namespace) -> int:
    cfg = setup_config(args)
    records = list(_records(cfg, args.source, args.show_proposals is not None))
    records = records[: args.num_images]
    max_proposals = args.show_proposals or None  # None: all of them
    mapper = DatasetMapper.from_config(cfg, is_train=True)
    output = Path(args.output)
    for dataset, name, index, record in tqdm(records, desc="visualize_data", unit="image"):
        rng = np.random.default_rng(None if cfg.SEED < 0 else [cfg.SEED, index])
        image, boxes, classes, proposals = _scene(record, args.source, mapper, rng)
        image, factors = enlarge(image, args.min_size)
        if args.show_proposals is not None:
            image = draw_proposals(image, proposals * factors, max_proposals)
        names = _class_names(dataset, classes)
        drawing = draw_ground_truth(image, boxes * factors, classes, names)
        target = output / dataset / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, cv2.imencode(".png", drawing)[1].tobytes())
    print(f"wrote {len(records)} pictures to {output}")
    return 0


def _records(cfg: DictConfig, source: str, with_proposals: bool) -> Iterator[tuple]:
    """``(dataset, output name, index in the dataset, record)`` for every image of
    ``DATASETS.TRAIN``; for the ``dataloader`` source only those training uses
    (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``)."""
    files = list(cfg.DATASETS.PROPOSAL_FILES_TRAIN)
    if with_proposals and not files:
        raise UserError("--show-proposals: DATASETS.PROPOSAL_FILES_TRAIN names no proposal file")
    if not cfg.DATASETS.TRAIN:
        raise UserError("DATASETS.TRAIN is empty; name the registered datasets to draw")
    for index, dataset in enumerate(cfg.DATASETS.TRAIN):
        dicts = get_detection_dataset_dicts(
            [dataset],
            [files[index]] if with_proposals else None,
            proposal_topk=cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN,
            proposal_loader=cfg.DATASETS.PROPOSAL_LOADER,
        )
        if source == "dataloader" and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = filter_images_without_objects(dicts)
        for index, (name, record) in enumerate(zip(_output_names(dicts), dicts, strict=True)):
            yield dataset, name, index, record


def _output_names(dicts: list[dict]) -> list[str]:
    """Each record's file stem, with its image id added where two records share a stem."""
    stems = [Path(record["file_name"]).stem for record in dicts]
    counts = Counter(stems)
    return [
        stem if counts[stem] == 1 else f"{stem}_{record['image_id']}"
        for stem, record in zip(stems, dicts, strict=True)
    ]


def _scene(
    record: dict, source: str, mapper: DatasetMapper, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The BGR image, ground-truth boxes and classes, and proposal boxes of ``record``: as
    loaded, or as ``mapper`` maps it for training, drawing from ``rng``."""
    if source == "annotation":
        annotations = record["annotations"]
        boxes = np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4)
        classes = np.array([a["category_id"] for a in annotations], np.int64)
        stored = record_proposals(record)
        proposals = np.zeros((0, 4)) if stored is None else stored[0].astype(np.float64)
        return read_record_image(record, mapper.max_image_pixels), boxes, classes, proposals
    mapped = mapper(record, rng)
    image = mapped["image"].numpy().transpose(1, 2, 0)
    if mapper.input_format == "RGB":
        image = image[:, :, ::-1]
    instances = mapped["instances"]
    proposals = mapped["proposals"].proposal_boxes.tensor if "proposals" in mapped else None
    return (
        np.ascontiguousarray(image),
        instances.gt_boxes.tensor.numpy().astype(np.float64),
        instances.gt_classes.numpy(),
        np.zeros((0, 4)) if proposals is None else proposals.numpy().astype(np.float64),
    )


def _class_names(dataset: str, classes: np.ndarray) -> list[str]:
    """The dataset's ``thing_classes``; class indices when its metadata has none."""
    names = MetadataCatalog.get(dataset).get("thing_classes")
    if names is not None:
        return list(names)
    return [str(index) for index in range(int(classes.max(initial=-1)) + 1)]


if __name__ == "__main__":
    sys.exit(main())
