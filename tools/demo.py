"""Draws a trained detector's detections on images and writes them as PNG files.

    python tools/demo.py --config-file CONFIG.yaml --input a.jpg photos/ --output demo/
        [--confidence-threshold 0.5] [--max-detections 100] [--min-size 480]
        MODEL.WEIGHTS=output/model_final.pth [KEY=VALUE | KEY VALUE ...]

An input folder stands for every image file in it, in name order. Each image gets fast
selective-search proposals and becomes ``<output>/<input stem>.png``. Class names are
``MODEL.ROI_HEADS.CLASS_NAMES`` (a run's config.yaml records them), else the ``thing_classes``
of ``DATASETS.TEST[0]`` when it has them, else class indices.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detkit.config import ConfigError
from detkit.data import MetadataCatalog
from detkit.data.mapper import read_image
from detkit.engine import DefaultPredictor
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.modeling.meta_arch.fast_rcnn import rescale_detections
from detkit.utils.arguments import output_folder, probability
from detkit.utils.errors import UserError
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.visualizer import add_min_size_argument, draw_detections, enlarge

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the model's config (YAML)")
    parser.add_argument(
        "--input", nargs="+", required=True, help="images, or folders of images, to draw on"
    )
    parser.add_argument(
        "--output", type=output_folder, required=True, help="folder for the PNG files"
    )
    parser.add_argument(
        "--confidence-threshold", type=probability, default=0.5, help="draw scores above it (0-1)"
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="draw at most this many detections per image, the best ones",
    )
    add_min_size_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("demo", argument_parser(), draw, argv)


def draw(args: argparse.Namespace) -> int:
    if args.max_detections <= 0:
        raise UserError(f"--max-detections must be positive, got {args.max_detections}")
    images = image_files(args.input)
    cfg = setup_config(args)
    class_names = _class_names(cfg)
    predictor = DefaultPredictor(cfg)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for path in tqdm(images, desc="demo", unit="image"):
        image = read_image(path, cfg.INPUT.MAX_IMAGE_PIXELS)
        instances = predictor(image)["instances"]
        image, instances = _enlarged(image, instances, args.min_size)
        drawing = draw_detections(
            image, instances, class_names, args.confidence_threshold, args.max_detections
        )
        target = output / f"{Path(path).stem}.png"
        write_bytes_atomically(target, cv2.imencode(".png", drawing)[1].tobytes())
        found = int((instances.scores > args.confidence_threshold).sum())
        tqdm.write(
            f"{path}: {min(found, args.max_detections)} of {found} detections drawn -> {target}"
        )
    return 0


def image_files(inputs: list[str]) -> list[str]:
    """The images of ``inputs``: each file as it is, each folder's image files sorted by name.
    Refuses in one line inputs that do not exist and folders without images, naming them all,
    and two images that would be written to the same ``<stem>.png``."""
    images, missing, empty = [], [], []
    for item in map(Path, inputs):
        if not item.exists():
            missing.append(str(item))
            continue
        found = (
            [item]
            if item.is_file()
            else sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        )
        empty += [] if found else [str(item)]
        images += [str(p) for p in found]
    problems = [f"no such image or folder: {', '.join(missing)}"] if missing else []
    if empty:
        problems.append(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(empty)}")
    clash = [stem for stem, count in Counter(Path(p).stem for p in images).items() if count > 1]
    if clash:
        problems.append(f"several inputs would be written to {clash[0]}.png; rename them")
    if problems:
        raise UserError("; ".join(problems))
    return images


def _enlarged(image: np.ndarray, instances, min_size: int):
    """``image`` (:func:`enlarge`) and its detections scaled up so its shorter side is
    ``min_size`` at least."""
    enlarged, _ = enlarge(image, min_size)
    if enlarged is image:
        return image, instances
    return enlarged, rescale_detections(instances, *enlarged.shape[:2])


def _class_names(cfg) -> list[str]:
    """The model's ``MODEL.ROI_HEADS.CLASS_NAMES`` (a run's config.yaml records them), else
    ``thing_classes`` of the first test set, checked against the model; else indices."""
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if cfg.MODEL.ROI_HEADS.CLASS_NAMES:
        return list(cfg.MODEL.ROI_HEADS.CLASS_NAMES)
    dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    names = MetadataCatalog.get(dataset).get("thing_classes") if dataset else None
    if names is None:
        return [str(index) for index in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(
            f"DATASETS.TEST[0] {dataset!r} has {len(names)} classes but "
            f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}"
        )
    return list(names)


if __name__ == "__main__":
    sys.exit(main())
