"""Draws a trained detector's detections on images and writes them as PNG files.

    python tools/demo.py --config-file CONFIG.yaml --input a.jpg b.jpg --output demo/
        [--confidence-threshold 0.5] MODEL.WEIGHTS=output/model_final.pth [KEY=VALUE ...]

Each image gets fast selective-search proposals and becomes ``<output>/<input stem>.png``. Class
names are the ``thing_classes`` of ``DATASETS.TEST[0]`` when it has them, else class indices.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detkit.config import ConfigError, load_config, looks_like_override
from detkit.data import MetadataCatalog
from detkit.data.mapper import read_image
from detkit.engine import DefaultPredictor
from detkit.modeling.meta_arch.fast_rcnn import rescale_detections
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.visualizer import draw_detections


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, help="the model's config (YAML)")
    parser.add_argument("--input", nargs="+", required=True, help="images to draw on")
    parser.add_argument("--output", required=True, help="folder for the PNG files")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument(
        "--min-size",
        type=int,
        default=480,
        help="enlarge pictures whose shorter side is smaller, so labels stay readable (0: never)",
    )
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="config KEY=VALUE pairs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    images = [word for word in args.input if not looks_like_override(word)]
    overrides = [word for word in args.input if looks_like_override(word)] + args.overrides
    clash = [stem for stem, count in Counter(Path(p).stem for p in images).items() if count > 1]
    if clash:
        return _fail(f"several inputs would be written to {clash[0]}.png; rename them")
    try:
        cfg = load_config(args.config_file, overrides)
        class_names = _class_names(cfg)
        predictor = DefaultPredictor(cfg)
    except (ConfigError, FileNotFoundError) as error:
        return _fail(error)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for path in tqdm(images, desc="demo", unit="image"):
        try:
            image = read_image(path)
        except FileNotFoundError as error:
            return _fail(error)
        instances = predictor(image)["instances"]
        image, instances = _enlarged(image, instances, args.min_size)
        drawing = draw_detections(image, instances, class_names, args.confidence_threshold)
        target = output / f"{Path(path).stem}.png"
        write_bytes_atomically(target, cv2.imencode(".png", drawing)[1].tobytes())
        drawn = int((instances.scores > args.confidence_threshold).sum())
        tqdm.write(f"{path}: {drawn} detections drawn -> {target}")
    return 0


def _enlarged(image: np.ndarray, instances, min_size: int):
    """``image`` and its detections scaled up so its shorter side is ``min_size`` at least."""
    scale = min_size / min(image.shape[:2])
    if scale <= 1:
        return image, instances
    height, width = round(image.shape[0] * scale), round(image.shape[1] * scale)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image, rescale_detections(instances, height, width)


def _class_names(cfg) -> list[str]:
    """``thing_classes`` of the first test set, checked against the model; else indices."""
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
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


def _fail(error: Exception | str) -> int:
    tqdm.write(f"demo: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
