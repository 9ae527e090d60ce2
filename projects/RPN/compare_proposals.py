"""Selective search against the RPN on shapes, side by side, in one command: their average
recall on shapes_val, their speed on this machine, and Fast R-CNN (the main job's config and
schedule) trained and tested on each kind of proposals, for each seed. The table in
projects/RPN/README.md and docs/model_zoo.md comes from it.

    python projects/RPN/compare_proposals.py [--output-dir output/rpn_compare]
        [--seeds 2015 7] [--speed-images 100]

For each seed it runs, one after the other and each only when its output is missing (delete a
folder to run it again): the RPN's training (projects/RPN/configs/shapes_rpn.yaml), its proposal
files for shapes_train and shapes_val (compute_proposals.py), and tools/train_net.py with
configs/shapes/fast_rcnn.yaml on selective search's files and on the RPN's. Recall is
evaluate_proposals.py's (the ``proposal_recall`` code) on shapes_val. Speed: both methods on the
same shapes_val images in this process, alternating image by image, on one core each (one
OpenCV and one torch thread), reading the image included; the RPN is the first seed's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import cv2
import rpn
import torch
from rpn.evaluator import proposal_file_recall

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_default_config, load_config
from detkit.data import DatasetCatalog, setup_datasets
from detkit.data.loaders import evaluation_mapper
from detkit.data.mapper import read_image
from detkit.data.selective_search import selective_search_boxes
from detkit.modeling import build_model
from detkit.utils.arguments import output_folder, positive_int

PROJECT = Path(__file__).resolve().parent
REPO = PROJECT.parents[1]
RPN_CONFIG = "projects/RPN/configs/shapes_rpn.yaml"
FAST_RCNN_CONFIG = "configs/shapes/fast_rcnn.yaml"
SELECTIVE_SEARCH = "datasets/shapes/{split}/selective_search.pkl"  # as the main job's config
SPLITS = ("train", "val")


def run_once(done: Path, command: list[str]) -> None:
    """Runs ``command`` from the repository root unless ``done`` exists; a failure ends the
    comparison."""
    if done.exists():
        return
    print("compare_proposals: running " + shlex.join(command), flush=True)
    if subprocess.run([sys.executable, *command], cwd=REPO).returncode != 0:
        sys.exit(f"compare_proposals: failed: {shlex.join(command)}")


def detection_result(output_dir: Path) -> dict[str, float]:
    """COCO AP, AP50 and AP75 of the finished Fast R-CNN run in ``output_dir``."""
    bbox = json.loads((output_dir / "inference" / "shapes_val" / "evaluation.json").read_text())
    return {name: bbox["bbox"][name] for name in ("AP", "AP50", "AP75")}


def rpn_files(rpn_dir: Path) -> dict[str, Path]:
    return {split: rpn_dir / "proposals" / f"shapes_{split}.pkl" for split in SPLITS}


def run_seed(output_dir: Path, seed: int) -> dict[str, dict]:
    """Every run of one seed; returns each method's recall and Fast R-CNN results."""
    rpn_dir = output_dir / f"rpn_seed{seed}"
    weights = rpn_dir / "model_final.pth"
    run_once(
        weights,
        [
            *("projects/RPN/train_net.py", "--config-file", RPN_CONFIG),
            *(f"SEED={seed}", f"OUTPUT_DIR={rpn_dir}"),
        ],
    )
    files = rpn_files(rpn_dir)
    for split, path in files.items():
        run_once(
            path,
            [
                *("projects/RPN/compute_proposals.py", "--config-file", RPN_CONFIG),
                *("--dataset", f"shapes_{split}", "--out", str(path), f"MODEL.WEIGHTS={weights}"),
            ],
        )
    runs = {
        "selective search": [],
        "RPN": [
            f"DATASETS.PROPOSAL_FILES_TRAIN=[{files['train']}]",
            f"DATASETS.PROPOSAL_FILES_TEST=[{files['val']}]",
        ],
    }
    results = {}
    for method, overrides in runs.items():
        folder = output_dir / f"fast_rcnn_{'rpn' if overrides else 'ss'}_seed{seed}"
        run_once(
            folder / "inference" / "shapes_val" / "evaluation.json",
            [
                *("tools/train_net.py", "--config-file", FAST_RCNN_CONFIG),
                *(f"SEED={seed}", f"OUTPUT_DIR={folder}", *overrides),
            ],
        )
        proposals = files["val"] if overrides else REPO / SELECTIVE_SEARCH.format(split="val")
        results[method] = {
            **proposal_file_recall("shapes_val", proposals, by_iou=True),
            **detection_result(folder),
        }
    return results


def measure_speed(weights: Path, num_images: int) -> dict[str, dict[str, float]]:
    """Images and proposals per second of selective search (fast mode, at most 2000) and of
    the RPN on the first ``num_images`` of shapes_val, alternating image by image, one thread
    each; the first three images of each warm up and are not timed."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = load_config(
        REPO / RPN_CONFIG,
        [f"MODEL.WEIGHTS={weights}", "MODEL.DEVICE=cpu"],
        defaults=rpn.add_rpn_config(get_default_config()),
    )
    cfg = setup_datasets(cfg)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, allow_partial=False).load(cfg.MODEL.WEIGHTS)
    mapper = evaluation_mapper(cfg)
    dicts = DatasetCatalog.get("shapes_val")
    methods = {
        "selective search": lambda record: len(
            selective_search_boxes(read_image(record["file_name"]))
        ),
        "RPN": lambda record: len(model([mapper(record)])[0]["proposals"]),
    }
    seconds = dict.fromkeys(methods, 0.0)
    counts = dict.fromkeys(methods, 0)
    with torch.no_grad():
        for index in range(min(num_images, len(dicts))):
            record = dicts[index]
            for method, propose in methods.items():
                start = time.perf_counter()
                found = propose(record)
                if index >= 3:
                    seconds[method] += time.perf_counter() - start
                    counts[method] += found
    images = min(num_images, len(dicts)) - 3
    return {
        method: {
            "images/s": images / seconds[method],
            "proposals/s": counts[method] / seconds[method],
            "proposals/image": counts[method] / images,
        }
        for method in methods
    }


def markdown_table(by_seed: dict[int, dict[str, dict]], speed: dict[str, dict]) -> str:
    lines = [
        "| proposals | seed | AR@100 | AR@1000 | ARs@1000 | ARm@1000 | recall at IoU 0.5 "
        "| at 0.7 | at 0.9 | AP | AP50 | AP75 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, results in by_seed.items():
        for method, r in results.items():
            lines.append(
                f"| {method} | {seed} | {r['AR@100']:.2f} | {r['AR@1000']:.2f} "
                f"| {r['ARs@1000']:.2f} | {r['ARm@1000']:.2f} | {r['R@1000@0.50']:.2f} "
                f"| {r['R@1000@0.70']:.2f} | {r['R@1000@0.90']:.2f} "
                f"| {r['AP']:.2f} | {r['AP50']:.2f} | {r['AP75']:.2f} |"
            )
    lines += [
        "",
        "| proposals | proposals/image | images/s | proposals/s | time per image |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, s in speed.items():
        lines.append(
            f"| {method} | {s['proposals/image']:.0f} | {s['images/s']:.1f} "
            f"| {s['proposals/s']:.0f} | {1000 / s['images/s']:.1f} ms |"
        )
    ratio = speed["selective search"]["images/s"] / speed["RPN"]["images/s"]  # RPN's time / SS's
    lines.append(
        f"\nThe RPN takes {ratio:.3f}x selective search's time per image ({1 / ratio:.1f}x faster)."
    )
    return "\n".join(lines)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=output_folder, default=Path("output/rpn_compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[2015, 7])
    parser.add_argument("--speed-images", type=positive_int, default=100)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    by_seed = {seed: run_seed(output_dir, seed) for seed in args.seeds}
    weights = output_dir / f"rpn_seed{args.seeds[0]}" / "model_final.pth"
    speed = measure_speed(weights, max(args.speed_images, 4))
    table = markdown_table(by_seed, speed)
    (output_dir / "table.md").write_text(table + "\n")
    (output_dir / "results.json").write_text(
        json.dumps({"seeds": {str(s): r for s, r in by_seed.items()}, "speed": speed}, indent=2)
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
