"""Selective-search proposals (OpenCV contrib's ``ximgproc.segmentation``), computed once per
dataset and cached as a proposal file in detectron2's pickle layout."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.file_io import write_bytes_atomically
from .mapper import MAX_IMAGE_PIXELS, read_image
from .proposals import PROPOSAL_LOADER_REGISTRY, detectron2_pickle, write_detectron2_pickle

logger = logging.getLogger(__name__)

MODES = ("fast", "quality")


def check_settings(mode: str, max_proposals: int) -> None:
    """Raises ``ValueError`` for a mode selective search does not have or a count of
    proposals below 1 (``[:0]`` would keep none, ``[:-5]`` drop each image's last five)."""
    if mode not in MODES:
        raise ValueError(f"selective search mode must be one of {MODES}, got {mode!r}")
    if not isinstance(max_proposals, int) or max_proposals < 1:
        raise ValueError(f"max_proposals must be a positive whole number, got {max_proposals!r}")


def selective_search_boxes(
    image: np.ndarray, mode: str = "fast", max_proposals: int = 2000
) -> np.ndarray:
    """``[n, 4]`` XYXY proposals of a BGR image, at most ``max_proposals``; the same image
    always gives the same proposals in the same order, in any process."""
    check_settings(mode, max_proposals)
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


def _one_image(job: tuple[str, str, int, int, Path]) -> tuple[str, int]:
    file_name, mode, max_proposals, max_image_pixels, part = job
    cv2.setNumThreads(1)
    boxes = selective_search_boxes(read_image(file_name, max_image_pixels), mode, max_proposals)
    np.save(part.with_suffix(".tmp.npy"), boxes)
    os.replace(part.with_suffix(".tmp.npy"), part)  # a part file is complete or absent
    return file_name, len(boxes)


def _parts_manifest(
    dataset_dicts: list[dict], mode: str, max_proposals: int, dataset_name: str | None
) -> dict:
    """What the parts of a run are the results of: a ``key`` hashing every image (id and file)
    in order and the settings, and a description of them for the log."""
    images = [[str(record["image_id"]), str(record["file_name"])] for record in dataset_dicts]
    settings = {"method": "selective_search", "mode": mode, "max_proposals": max_proposals}
    key = hashlib.sha256(json.dumps([images, settings]).encode()).hexdigest()
    about = (
        f"{dataset_name or 'a dataset'} ({len(images)} images), mode {mode}, at most "
        f"{max_proposals} proposals"
    )
    return {"key": key, "about": about}


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _prepare_parts(parts: Path, manifest: dict) -> None:
    """Makes ``parts`` the folder of the run ``manifest`` describes. An interrupted run's parts
    are kept when its manifest is this one; parts of another dataset, other images or other
    settings (or without a manifest) are discarded with a log line, never used."""
    found = _read_manifest(parts / "manifest.json")
    if found.get("key") == manifest["key"]:
        return
    if parts.exists():
        leftovers = len(list(parts.glob("*.npy")))
        if leftovers:
            logger.warning(
                f"discarding {leftovers} proposal parts in {parts}: an interrupted run left them "
                f"for {found.get('about', 'unknown images or settings')}, not for "
                f"{manifest['about']}"
            )
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_bytes_atomically(parts / "manifest.json", json.dumps(manifest))


def compute_proposal_file(
    dataset_dicts: list[dict],
    out_file: str | Path,
    mode: str = "fast",
    workers: int = 1,
    max_proposals: int = 2000,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    dataset_name: str | None = None,
) -> Path:
    """Writes selective-search proposals of every image to ``out_file`` (pickle layout); an
    image over ``max_image_pixels`` is refused (:func:`~detkit.data.mapper.read_image`).

    Each image's result is kept in ``<out_file>.parts/`` as soon as it is done, with a manifest
    of the images (ids and files, in order) and the settings, so an interrupted run resumes
    where it stopped, and only a run of the same images and settings uses them
    (``dataset_name`` names the dataset in the log). The final file appears only when
    complete. Logits are ``-rank`` in the reproducible order of :func:`selective_search_boxes`.
    """
    check_settings(mode, max_proposals)
    out_file = Path(out_file)
    parts = out_file.with_name(out_file.name + ".parts")
    _prepare_parts(parts, _parts_manifest(dataset_dicts, mode, max_proposals, dataset_name))
    jobs = [
        (record["file_name"], mode, max_proposals, max_image_pixels, parts / f"{index:07d}.npy")
        for index, record in enumerate(dataset_dicts)
    ]
    pending = [job for job in jobs if not job[-1].is_file()]
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
    boxes = [np.load(job[-1]) for job in jobs]
    ids = [record["image_id"] for record in dataset_dicts]
    write_detectron2_pickle(out_file, ids, boxes, [-np.arange(len(b)) for b in boxes])
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
