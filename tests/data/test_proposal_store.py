"""The proposal store: a proposal file converted once for its dataset, read by rows, giving
what pairing and cleaning each image by itself gives."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from detkit.data import DatasetCatalog, get_detection_dataset_dicts, proposal_store
from detkit.data.proposal_pairing import (
    CHUNK_ROWS,
    PairingReport,
    attach_proposals,
    cleaned_proposals,
)
from detkit.data.proposal_store import BOXES, OFFSETS, ProposalRows, record_proposals
from detkit.data.proposals import ProposalFileError, load_proposals


def images(count: int = 40, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "file_name": f"/data/img_{i:03d}.jpg",
            "image_id": i,
            "width": int(rng.integers(50, 300)),
            "height": int(rng.integers(50, 300)),
            "annotations": [],
        }
        for i in range(count)
    ]


def hostile_file(path: Path, records: list[dict], seed: int = 0, ordered: bool = False) -> Path:
    """Proposals with what the rules act on: boxes partly and wholly outside, without area,
    not finite, NaN logits, tied logits (0.0 and -0.0 among them); one image without
    proposals and one id of no image. ``ordered``: each image's logits best first (as
    detectron2 writes them), but for the NaN."""
    rng = np.random.default_rng(seed)
    ids, boxes, logits = [], [], []
    for record in records[1:]:  # image 0 has none
        n = int(rng.integers(10, 60))
        w, h = record["width"], record["height"]
        xy = rng.uniform(-1, [w * 0.8, h * 0.8], (n, 2))
        size = rng.uniform(0, [w * 0.22, h * 0.22], (n, 2))  # some pass the border a little
        rows = np.concatenate([xy, xy + size], axis=1).astype(np.float32)
        scores = rng.choice([-1.0, -0.0, 0.0, 0.5, 2.0], n).astype(np.float32)
        if ordered:
            scores = np.sort(scores)[::-1].copy()
        rows[0, 2] = np.nan
        rows[1] = [w + 5, h + 5, w + 9, h + 9]  # wholly outside: no area once clipped
        rows[2, 2] = rows[2, 0]  # no width
        scores[3] = np.nan
        ids.append(record["image_id"])
        boxes.append(rows)
        logits.append(scores)
    ids.append(10_000)
    boxes.append(np.array([[1, 1, 5, 5]], np.float32))
    logits.append(np.zeros(1, np.float32))
    with open(path, "wb") as file:
        pickle.dump({"ids": ids, "boxes": boxes, "objectness_logits": logits}, file)
    return path


def per_image_reference(boxes, logits, width, height, topk, min_size):
    """The rules written for one image at a time, as detkit applied them before the store."""
    boxes = boxes.astype(np.float32)
    logits = np.asarray(logits, np.float32)
    valid = np.isfinite(boxes).all(axis=1) & np.isfinite(logits)
    boxes, logits = boxes[valid], logits[valid]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (w > 0) & (h > 0) & (w > min_size) & (h > min_size)
    boxes, logits = boxes[keep], logits[keep]
    order = np.argsort(-logits, kind="stable")
    boxes, logits = boxes[order], logits[order]
    return (boxes[:topk], logits[:topk]) if topk is not None else (boxes, logits)


@pytest.fixture(params=[False, True], ids=["any order", "best first"])
def registered(tmp_path: Path, request):
    records = images()
    DatasetCatalog.register("store_test", lambda: [dict(r) for r in records])
    yield records, hostile_file(tmp_path / "p.pkl", records, ordered=request.param)
    DatasetCatalog.remove("store_test")


@pytest.mark.parametrize("topk, min_size", [(None, 0.0), (7, 0.0), (None, 4.5), (5, 2.0)])
def test_store_rows_equal_each_image_cleaned_by_itself(registered, topk, min_size) -> None:
    records, path = registered
    read = get_detection_dataset_dicts(
        ["store_test"], [str(path)], proposal_topk=topk, proposal_min_size=min_size
    )
    with open(path, "rb") as file:
        data = pickle.load(file)
    pairs = zip(data["boxes"], data["objectness_logits"], strict=True)
    by_id = dict(zip(data["ids"], pairs, strict=True))
    assert len(read) == len(records)
    for record, original in zip(read, records, strict=True):
        got_boxes, got_logits = record_proposals(record)
        if original["image_id"] not in by_id:
            assert got_boxes.shape == (0, 4) and got_logits.shape == (0,)
            continue
        boxes, logits = by_id[original["image_id"]]
        want_boxes, want_logits = per_image_reference(
            boxes, logits, original["width"], original["height"], topk, min_size
        )
        np.testing.assert_array_equal(got_boxes, want_boxes)  # bitwise, in order
        np.testing.assert_array_equal(got_logits, want_logits)
        assert got_boxes.dtype == np.float32 and got_boxes.flags.writeable


def test_chunks_split_anywhere_give_the_same_rows(registered) -> None:
    records, path = registered
    proposals = load_proposals(path, "auto", records)
    whole = attach_proposals([dict(r) for r in records], proposals, "p")
    small = cleaned_proposals(records, proposals, PairingReport("p"), chunk_rows=7)
    boxes = np.concatenate([chunk.boxes for chunk in small])
    assert CHUNK_ROWS > 7
    np.testing.assert_array_equal(boxes, np.concatenate([r["proposal_boxes"] for r in whole]))


def test_the_store_is_converted_once_and_warns_on_every_use(
    registered, caplog, monkeypatch
) -> None:
    _, path = registered
    calls = []
    monkeypatch.setattr(
        proposal_store, "load_proposals", lambda *a: calls.append(a) or load_proposals(*a)
    )
    with caplog.at_level(logging.INFO):
        first = get_detection_dataset_dicts(["store_test"], [str(path)])
        second = get_detection_dataset_dicts(["store_test"], [str(path)])
    assert len(calls) == 1  # the second reads the store, not the file
    assert caplog.text.count("converting the proposals for 40 images") == 1
    assert caplog.text.count("1 images have no proposals, e.g. '0'") == 2
    assert caplog.text.count("1 proposal ids match no image, e.g. '10000'") == 2
    rows = first[5]["proposal_rows"]
    assert isinstance(rows, ProposalRows) and rows == second[5]["proposal_rows"]
    folder = Path(rows.folder)
    offsets = np.load(folder / OFFSETS)
    assert len(offsets) == 41 and offsets[0] == 0 and (np.diff(offsets) >= 0).all()
    assert isinstance(np.load(folder / BOXES, mmap_mode="r"), np.memmap)


def test_refusals_happen_at_conversion_and_leave_no_store(tmp_path) -> None:
    records = [
        {"file_name": f"{i}.jpg", "image_id": i, "width": 300, "height": 60, "annotations": []}
        for i in range(10)
    ]
    rng = np.random.default_rng(1)
    boxes = []
    for _ in records:  # boxes that fit the wide images, written as (y1, x1, y2, x2)
        x1, y1 = rng.uniform(0, 250, 30), rng.uniform(0, 40, 30)
        boxes.append(np.stack([y1, x1, y1 + 15, x1 + 40], 1).astype(np.float32))
    path = tmp_path / "swapped.pkl"
    with open(path, "wb") as file:
        pickle.dump({"ids": [r["image_id"] for r in records], "boxes": boxes}, file)
    DatasetCatalog.register("store_swapped", lambda: [dict(r) for r in records])
    try:
        with pytest.raises(ProposalFileError, match=r"look like \(y1, x1, y2, x2\)"):
            get_detection_dataset_dicts(["store_swapped"], [str(path)])
    finally:
        DatasetCatalog.remove("store_swapped")
    stores = Path(os.environ["DETKIT_CACHE_DIR"]) / "proposals"
    assert not list(stores.glob("*swapped*"))
