"""Selective-search proposals (OpenCV contrib's ``ximgproc.segmentation``), computed once per
dataset and cached as a proposal file in detectron2's pickle layout."""

from __future__ import annotations

import os
import pickle
import shutil
import zlib
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .mapper import read_image
from .proposals import PROPOSAL_LOADER_REGISTRY, detectron2_pickle

MODES = ("fast", "quality")


def selective_search_boxes(
    image: np.ndarray, mode: str = "fast", max_proposals: int = 2000
) -> np.ndarray:
    """``[n, 4]`` XYXY proposals of a BGR image, at most ``max_proposals``; the same image
    always gives the same proposals in the same order, in any process."""
    if mode not in MODES:
        raise ValueError(f"selective search mode must be one of {MODES}, got {mode!r}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image)
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    # OpenCV returns the same set of boxes every time but ranks them with an unseeded random
    # factor; a canonical order shuffled by a seed taken from the pixels makes the result
    # reproducible (selective search's ranking is mostly random anyway).
    rects = np.unique(search.process().astype(np.float32).reshape(-1, 4), axis=0)
    order = np.random.default_rng(zlib.crc32(image.tobytes())).permutation(len(rects))
    rects = rects[order][:max_proposals]
    rects[:, 2:] += rects[:, :2]  # x, y, w, h -> x1, y1, x2, y2
    return rects


def _one_image(job: tuple[str, str, int, Path]) -> tuple[str, int]:
    file_name, mode, max_proposals, part = job
    cv2.setNumThreads(1)
    boxes = selective_search_boxes(read_image(file_name), mode, max_proposals)
    np.save(part.with_suffix(".tmp.npy"), boxes)
    os.replace(part.with_suffix(".tmp.npy"), part)  # a part file is complete or absent
    return file_name, len(boxes)


def compute_proposal_file(
    dataset_dicts: list[dict],
    out_file: str | Path,
    mode: str = "fast",
    workers: int = 1,
    max_proposals: int = 2000,
) -> Path:
    """Writes selective-search proposals of every image to ``out_file`` (pickle layout).

    Each image's result is kept in ``<out_file>.parts/`` as soon as it is done, so an
    interrupted run resumes where it stopped; the final file appears only when complete.
    Logits are ``-rank`` in the reproducible order of :func:`selective_search_boxes`.
    """
    out_file = Path(out_file)
    parts = out_file.with_name(out_file.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    jobs = [
        (record["file_name"], mode, max_proposals, parts / f"{index:07d}.npy")
        for index, record in enumerate(dataset_dicts)
    ]
    pending = [job for job in jobs if not job[3].is_file()]
    progress = tqdm(
        total=len(jobs), initial=len(jobs) - len(pending), desc="selective search", unit="image"
    )
    with progress:
        if workers > 1:
            with get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_one_image, pending):
                    progress.update()
        else:
            for job in pending:
                _one_image(job)
                progress.update()
    boxes = [np.load(job[3]) for job in jobs]
    data = {
        "ids": [record["image_id"] for record in dataset_dicts],
        "boxes": boxes,
        "objectness_logits": [-np.arange(len(b), dtype=np.float32) for b in boxes],
        "bbox_mode": 0,
    }
    temporary = out_file.with_name(out_file.name + ".tmp")
    with open(temporary, "wb") as file:
        pickle.dump(data, file)
    os.replace(temporary, out_file)
    shutil.rmtree(parts)
    return out_file


def ensure_proposal_file(
    dataset_dicts: list[dict], out_file: str | Path, mode: str = "fast", workers: int = 1
) -> Path:
    """``out_file``, computed with selective search first if it does not exist yet."""
    out_file = Path(out_file)
    if out_file.is_file():
        return out_file
    return compute_proposal_file(dataset_dicts, out_file, mode, workers)


@PROPOSAL_LOADER_REGISTRY.register()
def selective_search(path: str | Path, dataset_dicts: list[dict] | None) -> dict:
    """Proposal loader: the file at ``path``, computed (fast mode) first if it is missing."""
    if dataset_dicts is None:
        raise ValueError("the selective_search proposal loader needs the dataset's dicts")
    return detectron2_pickle(ensure_proposal_file(dataset_dicts, path, workers=os.cpu_count() or 1))
