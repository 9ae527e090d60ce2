"""Proposals paired with a dataset's images and cleaned, by one set of rules for every path.

Proposals are paired with images by ``image_id``, or failing that by file-name stem, never by
position. Images without proposals and proposal ids without images are reported; nothing
matching at all is an error. Invalid proposals (a coordinate or logit not finite, no area, or
outside the image) are dropped and counted in a warning; an image whose every proposal is
invalid is an error naming it. Boxes are clipped to the image and ordered by objectness, best
first (ties in the file's order). ``min_size`` and ``topk`` (the boxes kept: larger than
``min_size`` on both sides, then the ``topk`` best) are applied when an image's proposals are
read (:func:`select_proposals`), which gives what applying them first would. Duplicates are
not removed here: the model removes those that coincide on the grid of the feature map they
are pooled from (``MODEL.ROI_HEADS.DEDUP_PROPOSALS``), which depends on the image size it
runs at and on the map's stride.

:func:`cleaned_proposals` applies the rules to many images at once, vectorized over chunks of
about a million boxes; the proposal store (:mod:`detkit.data.proposal_store`) writes its
output to disk as it comes, and :func:`attach_proposals` puts it into dataset dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .proposals import ProposalFileError

logger = logging.getLogger(__name__)

INVALID = "a coordinate or logit not finite, no area, or outside the image"
CHUNK_ROWS = 1 << 20
EXAMPLES = 3


@dataclass
class _Tally:
    """A count and its first few examples: what a message about many images names."""

    count: int = 0
    total: int = 0  # of a quantity summed over the examples' images (dropped boxes)
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, amount: int = 1) -> None:
        self.count += 1
        self.total += amount
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def named(self) -> str:
        return _listed(self.examples, self.count)


def _listed(examples: list[str], count: int) -> str:
    """The examples quoted, with `` …`` when they are not all of ``count``."""
    return ", ".join(repr(e) for e in examples) + (" …" if count > len(examples) else "")


@dataclass
class PairingReport:
    """What pairing a file's proposals with a dataset found; :meth:`check` refuses what cannot
    be used, :meth:`warnings` says what was dropped or left unpaired."""

    source: str
    images: int = 0
    paired: int = 0
    missing: _Tally = field(default_factory=_Tally)  # images without proposals
    invalid: _Tally = field(default_factory=_Tally)  # images with dropped proposals
    useless: _Tally = field(default_factory=_Tally)  # images whose every proposal was dropped
    unused: _Tally = field(default_factory=_Tally)  # proposal ids of no image
    proposal_ids: list[str] = field(default_factory=list)  # the first few, for messages
    proposal_count: int = 0
    image_ids: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.paired:
            raise ProposalFileError(
                f"{self.source}: no proposal matches any of the {self.images} images by id or "
                f"file name (proposal ids look like "
                f"{_listed(self.proposal_ids, self.proposal_count)}, image ids like "
                f"{_listed(self.image_ids, self.images)})"
            )
        if self.useless.count:
            raise ProposalFileError(
                f"{self.source}: every proposal of {self.useless.count} images is invalid "
                f"({INVALID}), e.g. of image {self.useless.named()}; the file does not fit these "
                "images"
            )

    def warnings(self) -> list[str]:
        lines = []
        if self.invalid.count:
            lines.append(
                f"{self.source}: dropped {self.invalid.total} invalid proposals ({INVALID}) of "
                f"{self.invalid.count} images, e.g. of image {self.invalid.named()}"
            )
        if self.missing.count:
            lines.append(
                f"{self.source}: {self.missing.count} images have no proposals, e.g. "
                f"{self.missing.named()}"
            )
        if self.unused.count:
            lines.append(
                f"{self.source}: {self.unused.count} proposal ids match no image, e.g. "
                f"{self.unused.named()}"
            )
        return lines


@dataclass(frozen=True)
class CleanedChunk:
    """The cleaned proposals of consecutive images: their boxes and logits one image after
    another, and how many each image has."""

    boxes: np.ndarray  # [n, 4] float32
    logits: np.ndarray  # [n] float32
    counts: np.ndarray  # [images] int64


def cleaned_proposals(
    records: Sequence[dict],
    proposals: dict[str, tuple[np.ndarray, np.ndarray]],
    report: PairingReport,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[CleanedChunk]:
    """The proposals of every record, in order, cleaned by the module's rules, in chunks of
    consecutive records; ``report`` is filled as they go (and checked by the caller at the
    end, once every image was seen)."""
    used: set[str] = set()
    report.images = len(records)
    report.proposal_ids = [key for key, _ in zip(proposals, range(EXAMPLES), strict=False)]
    report.proposal_count = len(proposals)
    pending: list[tuple[np.ndarray, np.ndarray, int, int, str]] = []
    rows = 0
    for record in records:
        image_id = str(record["image_id"])
        if len(report.image_ids) < EXAMPLES:
            report.image_ids.append(image_id)
        key = image_id if image_id in proposals else Path(record["file_name"]).stem
        if key in proposals:
            used.add(key)
            report.paired += 1
            boxes, logits = proposals[key]
        else:
            report.missing.add(image_id)
            boxes, logits = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        pending.append((boxes, logits, record["width"], record["height"], image_id))
        rows += len(boxes)
        if rows >= chunk_rows:
            yield _clean(pending, report)
            pending, rows = [], 0
    if pending:
        yield _clean(pending, report)
    for key in proposals:
        if key not in used:
            report.unused.add(key)


def _clean(images: list[tuple], report: PairingReport) -> CleanedChunk:
    """The module's rules applied to the proposals of ``images`` (boxes, logits, width,
    height, id) at once."""
    counts = np.array([len(boxes) for boxes, *_ in images], np.int64)
    owner = np.repeat(np.arange(len(images)), counts)
    boxes = np.concatenate([b for b, *_ in images]).astype(np.float32, copy=False)
    logits = np.concatenate([np.asarray(s, np.float32) for _, s, *_ in images])
    widths = np.array([w for _, _, w, _, _ in images], np.float32)[owner]
    heights = np.array([h for _, _, _, h, _ in images], np.float32)[owner]
    valid = np.isfinite(boxes).all(axis=1) & np.isfinite(logits)
    boxes, logits, owner = boxes[valid], logits[valid], owner[valid]
    widths, heights = widths[valid], heights[valid]
    boxes = np.stack(
        [
            boxes[:, 0].clip(0, widths),
            boxes[:, 1].clip(0, heights),
            boxes[:, 2].clip(0, widths),
            boxes[:, 3].clip(0, heights),
        ],
        axis=1,
    )
    has_area = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, logits, owner = boxes[has_area], logits[has_area], owner[has_area]
    kept = np.bincount(owner, minlength=len(images))
    for index in np.flatnonzero(kept < counts).tolist():  # the images that lost some
        image_id = images[index][4]
        report.invalid.add(image_id, int(counts[index] - kept[index]))
        if kept[index] == 0:
            report.useless.add(image_id)
    same_image = owner[1:] == owner[:-1]
    if (same_image & (logits[1:] > logits[:-1])).any():  # files are often sorted already
        order = np.lexsort((-logits, owner))  # by image, then best first; ties keep order
        boxes, logits = boxes[order], logits[order]
    return CleanedChunk(boxes, logits, kept)


def select_proposals(
    boxes: np.ndarray, logits: np.ndarray, topk: int | None, min_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """An image's cleaned proposals larger than ``min_size`` on both sides, the ``topk`` best
    (``None``: all)."""
    if min_size > 0:
        keep = (boxes[:, 2] - boxes[:, 0] > min_size) & (boxes[:, 3] - boxes[:, 1] > min_size)
        boxes, logits = boxes[keep], logits[keep]
    if topk is not None:
        boxes, logits = boxes[:topk], logits[:topk]
    return boxes, logits


def attach_proposals(
    dataset_dicts: list[dict],
    proposals: dict[str, tuple[np.ndarray, np.ndarray]],
    source: str,
    topk: int | None = None,
    min_size: float = 0.0,
) -> list[dict]:
    """Adds ``proposal_boxes`` and ``proposal_objectness_logits`` to each dataset dict of a
    list, by the module's rules; returns the list. (Training and evaluation keep proposals in
    a store instead, :func:`detkit.data.proposal_store.proposal_column`.)"""
    report = PairingReport(source)
    position = 0
    for chunk in cleaned_proposals(dataset_dicts, proposals, report):
        ends = np.cumsum(chunk.counts)
        for end, count in zip(ends, chunk.counts, strict=True):
            record = dataset_dicts[position]
            boxes, logits = chunk.boxes[end - count : end], chunk.logits[end - count : end]
            record["proposal_boxes"], record["proposal_objectness_logits"] = select_proposals(
                boxes, logits, topk, min_size
            )
            position += 1
    report.check()
    for line in report.warnings():
        logger.warning(line)
    return dataset_dicts
