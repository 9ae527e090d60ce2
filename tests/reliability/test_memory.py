"""Loader memory: the workers share the dataset list instead of each copying it.

The train and test loaders hold the dataset list as a `SerializedList`
(`detkit/data/serialize.py`): the records pickled into one NumPy byte buffer plus their offsets,
which forked workers share, where a list of Python dicts is copied page by page into every
worker that reads it (copy-on-read: reading an object writes its reference count). Each read
unpickles a fresh copy, which the mapper may change; a record that cannot be pickled is refused
when the loader is built, naming the record, its file and the key. The helpers are
benchmarks/loader_memory.py's, whose 100k-record figures are in docs/distributed.md; the case
here takes 20k records, which still tells the two apart.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from reliability_helpers import REPO

from detkit.data import build_detection_test_loader, build_detection_train_loader
from detkit.data.serialize import SerializedList

SMAPS = Path("/proc/self/smaps_rollup")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "loader_memory", REPO / "benchmarks" / "loader_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_round_trip(bench: ModuleType) -> None:
    """COCO-like records in a SerializedList → read back equal, in order, arrays of same dtype"""
    records = bench.synthetic_records(50, proposals=20)
    held = SerializedList(records)
    assert len(held) == 50
    for original, read in zip(records, held, strict=True):
        assert read.keys() == original.keys()
        assert read["annotations"] == original["annotations"]
        for key in ("proposal_boxes", "proposal_objectness_logits"):
            assert read[key].dtype == np.float32 and read[key].shape == original[key].shape
            np.testing.assert_array_equal(read[key], original[key])
    assert held[-1]["image_id"] == 49


def test_reads_are_fresh_copies(bench: ModuleType) -> None:
    """A reader changing the record it read → the next read of that record is unchanged"""
    held = SerializedList(bench.synthetic_records(3, proposals=20))
    first = held[1]
    first["annotations"].clear()
    first["proposal_boxes"][:] = 0
    again = held[1]
    assert len(again["annotations"]) == 7
    assert again["proposal_boxes"].any()


def test_index_past_the_end(bench: ModuleType) -> None:
    """Record 3 of a held list of 3 → IndexError naming index and length; iteration stops"""
    held = SerializedList(bench.synthetic_records(3, proposals=0))
    with pytest.raises(IndexError, match="record 3 of a dataset of 3"):
        held[3]
    assert [record["image_id"] for record in held] == [0, 1, 2]


def test_unpicklable_record_is_refused(bench: ModuleType) -> None:
    """A dataset dict holding a lambda → refused naming the record, its file and the key"""
    records = bench.synthetic_records(3, proposals=0)
    records[2]["reader"] = lambda: None
    with pytest.raises(ValueError, match=r"record 2 \(images/000000000002\.jpg\).*key 'reader'"):
        build_detection_train_loader(
            records, lambda record, rng: len(record), total_batch_size=1, seed=0
        )


def test_train_loader_mapper_changes_do_not_leak(bench: ModuleType) -> None:
    """A train mapper emptying each record's annotations → later reads still have all 7"""
    records = bench.synthetic_records(4, proposals=10)
    seen = []

    def mapper(record: dict, rng: object) -> int:
        seen.append(len(record["annotations"]))
        record["annotations"].clear()
        return record["image_id"]

    loader = build_detection_train_loader(records, mapper, total_batch_size=2, seed=0)
    batches = list(itertools.islice(loader, 6))  # three epochs of the four images
    assert seen == [7] * 12
    for epoch in range(3):
        assert sorted(batches[2 * epoch] + batches[2 * epoch + 1]) == [0, 1, 2, 3]
    assert all(len(record["annotations"]) == 7 for record in records)


def test_test_loader_serves_records_in_order(bench: ModuleType) -> None:
    """Test loader over 5 dicts, 2 workers → each image once, in order, equal to its dict"""
    records = bench.synthetic_records(5, proposals=20)
    loader = build_detection_test_loader(records, mapper=lambda record: record, num_workers=2)
    served = [batch[0] for batch in loader]
    assert [record["image_id"] for record in served] == [0, 1, 2, 3, 4]
    for original, read in zip(records, served, strict=True):
        assert read["annotations"] == original["annotations"]
        np.testing.assert_array_equal(read["proposal_boxes"], original["proposal_boxes"])


@pytest.mark.skipif(not SMAPS.exists(), reason="needs /proc/<pid>/smaps_rollup (Linux)")
def test_worker_private_memory_stays_flat(bench: ModuleType) -> None:
    """20k COCO-like records, 2 train-loader workers → each grows < 20 MiB; a plain list > 25"""
    records = bench.synthetic_records(20_000)
    plain = bench.worker_growth(bench.plain_pass(records, workers=2))
    held = bench.worker_growth(bench.serialized_pass(records, workers=2))
    assert len(plain) == len(held) == 2
    plain_growth = [peak - first for first, peak in plain.values()]
    held_growth = [peak - first for first, peak in held.values()]
    assert all(growth > 25 for growth in plain_growth), plain
    assert all(growth < 20 for growth in held_growth), held
