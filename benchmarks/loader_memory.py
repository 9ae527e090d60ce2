"""Memory of the dataset list: loader workers' private memory over one pass.
docs/distributed.md ("Memory") gives the figures and this command.

    .venv/bin/python benchmarks/loader_memory.py workers --images 100000 --workers 2

``workers`` builds a COCO-like list (7 boxes and 500 float32 proposals per image) and lets
``--workers`` DataLoader workers map every record once: held as a plain list of dicts (what the
loaders did before, each read a deep copy) and as detkit's train loader holds it now (a
:class:`~detkit.data.serialize.SerializedList`). Each worker's private memory (Private_Clean +
Private_Dirty of /proc/<pid>/smaps_rollup) is sampled at its first record and every 1000th.
The memory of proposal files at COCO's scale, now kept in a memory-mapped store, is measured by
``benchmarks/coco_scale.py``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, get_worker_info

from detkit.data import build_detection_train_loader

WIDTH, HEIGHT = 640, 480


def synthetic_records(count: int, boxes: int = 7, proposals: int = 500, seed: int = 0) -> list:
    """``count`` COCO-like dataset dicts: ``boxes`` annotations and ``proposals`` float32
    proposal boxes (with logits; none when 0) each, all images landscape ``WIDTH`` by ``HEIGHT``."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        corners = rng.uniform(0, [WIDTH - 64, HEIGHT - 64], (boxes, 2)).round(1)
        record = {
            "file_name": f"images/{index:012d}.jpg",
            "image_id": index,
            "height": HEIGHT,
            "width": WIDTH,
            "annotations": [
                {"bbox": [x, y, x + 48.0, y + 32.0], "bbox_mode": 0, "category_id": index % 80}
                for x, y in corners.tolist()
            ],
        }
        if proposals:
            record["proposal_boxes"] = random_boxes(rng, proposals)
            record["proposal_objectness_logits"] = rng.standard_normal(proposals, np.float32)
        records.append(record)
    return records


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` valid XYXY boxes inside a ``WIDTH`` by ``HEIGHT`` image, float32."""
    x1y1 = rng.uniform(0, [WIDTH - 16, HEIGHT - 16], (count, 2))
    x2y2 = x1y1 + rng.uniform(8, 16, (count, 2))
    return np.concatenate([x1y1, x2y2], axis=1).astype(np.float32)


def private_mb(pid: str = "self") -> float:
    """The process's private memory (pages no other process shares), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


class MemoryProbe:
    """A mapper that reads a record's proposals and, at a worker's first record and every
    ``every``-th, returns ``(worker id, its private MiB)`` (else None)."""

    def __init__(self, every: int = 1000) -> None:
        self.every, self.count = every, 0

    def __call__(self, record: dict, rng: object = None) -> tuple[int, float] | None:
        self.count += 1
        float(record["proposal_boxes"].sum())  # a mapper reads them
        if self.count == 1 or self.count % self.every == 0:
            return get_worker_info().id, private_mb()
        return None


class PlainList(Dataset):
    """The old way: a plain list of dicts, each read deep-copied before mapping."""

    def __init__(self, records: list, mapper: Callable[[dict], object]) -> None:
        self.records, self.mapper = records, mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> object:
        return self.mapper(copy.deepcopy(self.records[index]))


def plain_pass(records: list, workers: int, batch: int = 100) -> Iterable[list]:
    """One shuffled pass over ``records`` held as a plain list."""
    return DataLoader(
        PlainList(records, MemoryProbe()),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=list,
    )


def serialized_pass(records: list, workers: int, batch: int = 100) -> Iterable[list]:
    """One pass over ``records`` through detkit's train loader (a ``SerializedList``)."""
    loader = build_detection_train_loader(
        records, MemoryProbe(), total_batch_size=batch, seed=0, num_workers=workers
    )
    return itertools.islice(loader, len(records) // batch)


def worker_growth(batches: Iterable[list]) -> dict[int, tuple[float, float]]:
    """Per worker: its private MiB at its first sample and at its largest, over ``batches``."""
    samples: dict[int, list[float]] = {}
    for batch in batches:
        for sample in batch:
            if sample is not None:
                samples.setdefault(sample[0], []).append(sample[1])
    return {worker: (values[0], max(values)) for worker, values in sorted(samples.items())}


def measure_workers(images: int, workers: int) -> None:
    records = synthetic_records(images)
    print(f"{images} records, {workers} workers (private MiB: first record → peak of the pass)")
    for name, make_pass in (("plain list", plain_pass), ("SerializedList", serialized_pass)):
        growth = worker_growth(make_pass(records, workers))
        figures = ", ".join(f"{first:.0f} → {peak:.0f}" for first, peak in growth.values())
        print(f"  {name:15s} {figures}")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    workers = commands.add_parser("workers", help="worker private memory over one pass")
    workers.add_argument("--images", type=int, default=100_000)
    workers.add_argument("--workers", type=int, default=2)
    return parser


def main() -> None:
    args = argument_parser().parse_args()
    measure_workers(args.images, args.workers)


if __name__ == "__main__":
    main()
