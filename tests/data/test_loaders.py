"""Data loaders: seeded, resumable, aspect-grouped, sharded training batches; ordered test data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from detkit.config import load_config
from detkit.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detkit.data.loaders import TrainingBatches, index_batches

REPO = Path(__file__).resolve().parents[2]


def fake_dicts(count: int = 23) -> list[dict]:
    return [
        {
            "image_id": i,
            "height": 100,
            "width": 150 if i % 3 else 80,
            "file_name": f"{i}.jpg",
            "annotations": [],
        }
        for i in range(count)
    ]


def as_given(record: dict, rng) -> dict:
    """A training mapper that changes nothing (and draws nothing from ``rng``)."""
    return record


def ids_of(batches) -> list[list[int]]:
    return [[item["image_id"] for item in batch] for batch in batches]


def take(loader, count: int) -> list[list[int]]:
    return ids_of(itertools.islice(iter(loader), count))


def test_batches_depend_only_on_the_seed_and_group_by_orientation() -> None:
    landscape = [d["width"] >= d["height"] for d in fake_dicts()]
    first = list(itertools.islice(index_batches(landscape, 2, seed=7), 40))
    again = list(itertools.islice(index_batches(landscape, 2, seed=7), 40))
    other = list(itertools.islice(index_batches(landscape, 2, seed=8), 40))
    assert first == again != other
    assert all(landscape[a] == landscape[b] for a, b in first)
    # one epoch visits every image once before the next begins (up to the grouping buffer)
    assert set(itertools.chain(*first[:10])) <= set(range(23))


def test_resuming_at_k_gives_the_batches_of_a_straight_run() -> None:
    dicts = fake_dicts()
    straight = take(TrainingBatches(dicts, as_given, 2, seed=3), 30)
    resumed = take(TrainingBatches(dicts, as_given, 2, seed=3, start_iter=12), 18)
    assert resumed == straight[12:]


def test_ranks_take_disjoint_shards() -> None:
    landscape = [True] * 20
    rank0 = set(itertools.chain(*itertools.islice(index_batches(landscape, 2, 5, 0, 2), 5)))
    rank1 = set(itertools.chain(*itertools.islice(index_batches(landscape, 2, 5, 1, 2), 5)))
    assert not rank0 & rank1 and rank0 | rank1 == set(range(20))


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_from_config_with_workers(workers: int) -> None:
    DatasetCatalog.register("tiny_loader", fake_dicts)
    try:
        cfg = load_config(
            REPO / "configs" / "Base-FastRCNN.yaml",
            [
                "DATASETS.TRAIN=[tiny_loader]",
                "SEED=4",
                f"DATALOADER.NUM_WORKERS={workers}",
                "DATALOADER.FILTER_EMPTY_ANNOTATIONS=false",  # fake_dicts have no objects
            ],
        )
        expected = take(TrainingBatches(fake_dicts(), as_given, 2, seed=4), 8)
        assert take(build_detection_train_loader(cfg, mapper=as_given), 8) == expected
        test = build_detection_test_loader(cfg, "tiny_loader", mapper=dict)
        assert [batch[0]["image_id"] for batch in test] == list(range(23))
    finally:
        DatasetCatalog.remove("tiny_loader")


def test_images_without_objects_are_dropped_from_training_only() -> None:
    dicts = fake_dicts(6)
    dicts[1]["annotations"] = [{"bbox": [0, 0, 5, 5], "category_id": 0}]
    dicts[4]["annotations"] = [{"bbox": [0, 0, 5, 5], "category_id": 0, "iscrowd": 1}]
    dicts[5]["annotations"] = [{"bbox": [1, 1, 5, 5], "category_id": 0, "iscrowd": 0}]
    DatasetCatalog.register("tiny_sparse", lambda: [dict(d) for d in dicts])
    try:
        cfg = load_config(
            REPO / "configs" / "Base-FastRCNN.yaml",
            [
                "DATASETS.TRAIN=[tiny_sparse]",
                "SEED=4",
                "DATALOADER.NUM_WORKERS=0",
                "MODEL.ROI_HEADS.NUM_CLASSES=1",
            ],
        )
        seen = set(itertools.chain(*take(build_detection_train_loader(cfg, mapper=as_given), 6)))
        assert seen == {1, 5}  # no objects (0, 2, 3) or only a crowd region (4): dropped
        test = build_detection_test_loader(cfg, "tiny_sparse", mapper=dict)
        assert [batch[0]["image_id"] for batch in test] == list(range(6))
    finally:
        DatasetCatalog.remove("tiny_sparse")


def test_loaders_take_plain_arguments_without_a_config_or_a_catalog() -> None:
    dicts = fake_dicts()
    expected = take(TrainingBatches(dicts, as_given, 2, seed=9), 6)
    loader = build_detection_train_loader(dicts, as_given, total_batch_size=2, seed=9)
    assert take(loader, 6) == expected
    resumed = build_detection_train_loader(dicts, as_given, 3, total_batch_size=2, seed=9)
    assert take(resumed, 3) == expected[3:]
    test = build_detection_test_loader(dicts[:5], mapper=dict)
    assert [batch[0]["image_id"] for batch in test] == [0, 1, 2, 3, 4]


def test_plain_loaders_say_what_they_miss() -> None:
    with pytest.raises(TypeError, match="needs a mapper and a total_batch_size"):
        build_detection_train_loader(fake_dicts(), as_given)
    with pytest.raises(ValueError, match="the dataset is empty"):
        build_detection_train_loader([], as_given, total_batch_size=2)
    with pytest.raises(TypeError, match=r"needs a mapper"):
        build_detection_test_loader(fake_dicts())


def test_the_mapper_is_given_one_generator_per_batch_seeded_by_seed_rank_and_batch() -> None:
    def mapper(record: dict, rng: np.random.Generator) -> tuple[int, int]:
        return record["image_id"], int(rng.integers(1 << 30))

    dicts = fake_dicts()
    straight = list(itertools.islice(TrainingBatches(dicts, mapper, 2, seed=3), 6))
    for number, batch in enumerate(straight):  # the images of a batch draw in turn from one
        rng = np.random.default_rng([3, 0, number])
        assert [draw for _, draw in batch] == [int(rng.integers(1 << 30)) for _ in batch]
    workers = build_detection_train_loader(dicts, mapper, total_batch_size=2, seed=3, num_workers=2)
    assert [[tuple(item) for item in batch] for batch in itertools.islice(workers, 6)] == straight
    resumed = TrainingBatches(dicts, mapper, 2, seed=3, start_iter=4)
    assert list(itertools.islice(resumed, 2)) == straight[4:]


def test_a_training_mapper_that_takes_no_generator_is_refused_saying_how_it_is_called() -> None:
    with pytest.raises(TypeError, match=r"calls its mapper as mapper\(record, rng\).*\(record\)"):
        build_detection_train_loader(
            fake_dicts(), lambda record: record, total_batch_size=2, seed=0
        )
