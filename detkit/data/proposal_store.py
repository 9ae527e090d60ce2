"""Proposal files converted once into a memory-mapped store, and read by rows.

A proposal file (detectron2's pickle, Fast R-CNN's ``.mat``, selective search's output, any
registered loader's) is read once for the dataset it is paired with: its proposals are checked
(by the loader), paired with the dataset's images and cleaned
(:mod:`detkit.data.proposal_pairing`), and written as three arrays, in the dataset's order:

* ``boxes.npy``: float32 ``[n, 4]``, each image's valid boxes clipped to it, best first;
* ``logits.npy``: float32 ``[n]``, their objectness logits;
* ``offsets.npy``: int64 ``[images + 1]``, where each image's rows start.

The store is a converted form of :mod:`detkit.data.cache` (named by the file's SHA-256, the
dataset and the rules' version; built atomically; a stale, truncated or foreign store is made
again), so every later run, tool and process opens it in a fraction of a second and maps the
same pages. A dataset record then holds a :class:`ProposalRows` (``proposal_rows``), a
reference to its rows, instead of arrays; the mapper reads the rows of the images it loads
(:func:`record_proposals`), where ``min_size`` and ``topk`` are applied.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import converted, folder_size
from .proposal_pairing import PairingReport, cleaned_proposals, select_proposals
from .proposals import load_proposals

logger = logging.getLogger(__name__)

BOXES, LOGITS, OFFSETS = "boxes.npy", "logits.npy", "offsets.npy"


@dataclass(frozen=True)
class ProposalRows:
    """A record's proposals: rows ``start:stop`` of the store in ``folder``, read with
    ``min_size`` and ``topk`` applied (:func:`~detkit.data.proposal_pairing.select_proposals`)."""

    folder: str
    start: int
    stop: int
    topk: int | None = None
    min_size: float = 0.0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The boxes ``[n, 4]`` and logits ``[n]`` (float32 arrays of their own)."""
        boxes, logits = _opened(self.folder)
        return tuple(
            np.array(a)
            for a in select_proposals(
                boxes[self.start : self.stop],
                logits[self.start : self.stop],
                self.topk,
                self.min_size,
            )
        )


class ProposalColumn(Sequence):
    """The :class:`ProposalRows` of every record of a dataset, from its store's offsets."""

    def __init__(self, folder: Path, topk: int | None, min_size: float) -> None:
        self.folder, self.topk, self.min_size = str(folder), topk, min_size
        self.offsets = np.load(folder / OFFSETS)  # 8 bytes an image: read, not mapped

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> ProposalRows:  # type: ignore[override]
        start, stop = self.offsets[index : index + 2].tolist()
        return ProposalRows(self.folder, start, stop, self.topk, self.min_size)

    def __reduce__(self) -> tuple:
        return ProposalColumn, (Path(self.folder), self.topk, self.min_size)


def record_proposals(record: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """A dataset dict's proposals as float32 arrays (boxes ``[n, 4]``, logits ``[n]``): read
    from its store (``proposal_rows``), or its own ``proposal_boxes`` and
    ``proposal_objectness_logits``; None when it has none."""
    rows = record.get("proposal_rows")
    if rows is not None:
        return rows.read()
    if "proposal_boxes" not in record:
        return None
    boxes = np.asarray(record["proposal_boxes"], np.float32).reshape(-1, 4)
    return boxes, np.asarray(record["proposal_objectness_logits"], np.float32).reshape(-1)


@functools.lru_cache(maxsize=64)
def _opened(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """A store's boxes and logits, memory-mapped once per process."""
    return (
        np.load(Path(folder) / BOXES, mmap_mode="r"),
        np.load(Path(folder) / LOGITS, mmap_mode="r"),
    )


def proposal_column(
    path: str | Path,
    loader: str,
    records: Sequence[dict],
    source: str,
    topk: int | None = None,
    min_size: float = 0.0,
) -> ProposalColumn:
    """The proposals of ``path`` for ``records`` as a column of :class:`ProposalRows`, from
    its store, converted first when there is none (``loader`` reads the file; ``source`` names
    it in messages). The refusals are the loader's and :mod:`detkit.data.proposal_pairing`'s;
    its warnings are logged on every use."""
    path = Path(path)
    loaded = None
    if not path.is_file():  # a loader that makes a missing file (selective_search) makes it now
        loaded = load_proposals(path, loader, records)
    key = {"dataset": records_identity(records), "loader": loader}

    def build(folder: Path) -> dict:
        return _write_store(
            folder, records, loaded or load_proposals(path, loader, records), source
        )

    started = time.perf_counter()
    folder, manifest = converted("proposals", path, key, build)
    took = time.perf_counter() - started
    for line in manifest["warnings"]:
        logger.warning(line)
    logger.info(
        f"{source}: {manifest['boxes']} proposals of {manifest['images']} images in {folder} "
        f"({folder_size(folder)}, memory-mapped; {took:.1f} s)"
    )
    return ProposalColumn(folder, topk, min_size)


def records_identity(records: Sequence[dict]) -> str:
    """What identifies a dataset's records for pairing: its converted form's folder name when
    it was opened from one, else a digest of every record's id, file name and size."""
    folder = getattr(records, "folder", None)
    if folder is not None:
        return Path(folder).name
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            repr(
                (record["image_id"], Path(record["file_name"]).stem, record["width"],
                 record["height"])
            ).encode()
        )  # fmt: skip
    return digest.hexdigest()


def _write_store(
    folder: Path, records: Sequence[dict], proposals: dict, source: str
) -> dict[str, object]:
    """Pairs and cleans ``proposals`` for ``records`` into the store's files in ``folder``;
    returns the facts for its manifest (the counts, and the warnings to log on every use)."""
    logger.info(f"{source}: converting the proposals for {len(records)} images (once) …")
    report = PairingReport(source)
    counts = []
    with _NpyAppender(folder / BOXES, "<f4", 4) as boxes, _NpyAppender(
        folder / LOGITS, "<f4"
    ) as logits:
        for chunk in cleaned_proposals(records, proposals, report):
            boxes.append(chunk.boxes)
            logits.append(chunk.logits)
            counts.append(chunk.counts)
    report.check()
    offsets = np.concatenate([[0], np.cumsum(np.concatenate([np.zeros(0, np.int64), *counts]))])
    np.save(folder / OFFSETS, offsets.astype(np.int64))
    return {"images": len(records), "boxes": int(offsets[-1]), "warnings": report.warnings()}


class _NpyAppender:
    """An ``.npy`` file of rows written as they come: the data after a fixed-size header,
    which is written, with the final number of rows, when the file is closed."""

    HEADER = 128  # bytes: the magic string, version 1.0, and the header dict padded

    def __init__(self, path: Path, dtype: str, width: int | None = None) -> None:
        self.path, self.dtype, self.width, self.rows = path, np.dtype(dtype), width, 0
        self.file = open(path, "wb")  # noqa: SIM115 (closed by __exit__)
        self.file.write(b"\0" * self.HEADER)

    def append(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.rows += len(rows)

    def __enter__(self) -> _NpyAppender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        shape = (self.rows,) if self.width is None else (self.rows, self.width)
        header = repr({"descr": self.dtype.str, "fortran_order": False, "shape": shape})
        text = header.encode("latin1").ljust(self.HEADER - 10 - 1) + b"\n"
        self.file.seek(0)
        self.file.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
        self.file.close()
