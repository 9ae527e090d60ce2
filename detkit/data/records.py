"""The records a loader reads: datasets one after another, as a sequence that copies nothing.

At COCO's scale the records of a training set are hundreds of megabytes as Python objects in
every process; :class:`DatasetRecords` keeps each dataset as it was loaded (a
:class:`~detkit.data.serialize.SerializedList`, memory-mapped from the cache for detkit's own
loaders) and gives out a fresh dict per read, with the fields the data pipeline adds (the
proposal rows of a store) taken from per-record columns and the records a rule leaves out
skipped by index. Reading a record costs one unpickling; holding the sequence costs a few bytes
per record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .serialize import SerializedList


@dataclass(frozen=True)
class RecordSummary:
    """What start-up needs of every record, gathered in one pass: each record's size and
    whether it has an object to learn from, and the categories of all of them."""

    widths: np.ndarray  # int64, per record
    heights: np.ndarray
    has_object: np.ndarray  # bool: a non-crowd annotation
    instances: dict[int, int]  # non-crowd annotations per category id
    largest_category: int  # the largest category id of any annotation (-1: none)

    @classmethod
    def of(cls, records: Iterable[dict], count: int) -> RecordSummary:
        widths, heights = np.zeros(count, np.int64), np.zeros(count, np.int64)
        has_object = np.zeros(count, bool)
        instances: Counter = Counter()
        largest = -1
        for index, record in enumerate(records):
            widths[index], heights[index] = record["width"], record["height"]
            for annotation in record.get("annotations", ()):
                category = annotation["category_id"]
                largest = max(largest, category)
                if not annotation.get("iscrowd", 0):
                    instances[category] += 1
                    has_object[index] = True
        return cls(widths, heights, has_object, dict(instances), largest)



@dataclass(frozen=True)
class _Part:
    """One dataset's records, the columns of fields added to them, and whether its
    ``difficult`` annotations are left out."""

    records: Sequence[dict]
    columns: Mapping[str, Sequence] = field(default_factory=dict)
    drop_difficult: bool = False


class DatasetRecords(Sequence):
    """A read-only sequence of dataset dicts: ``self[i]`` is a fresh dict its reader may change.

    Built by :meth:`of` from one dataset's records (a list is serialized once into a
    :class:`SerializedList`, which workers share), joined by :meth:`concat`, narrowed by
    :meth:`select`.
    """

    def __init__(self, parts: Sequence[_Part], index: np.ndarray | None = None) -> None:
        self._parts = list(parts)
        if index is None:
            index = np.concatenate(
                [np.zeros((0, 2), np.int64)]
                + [
                    np.stack([np.full(len(p.records), n), np.arange(len(p.records))], axis=1)
                    for n, p in enumerate(self._parts)
                ]
            )
        self._index = index  # [n, 2]: the part and the row of each record
        self._summary: RecordSummary | None = None
        self._landscape: np.ndarray | None = None  # known from a summary made before select

    @classmethod
    def of(
        cls,
        records: Sequence[dict],
        columns: Mapping[str, Sequence] | None = None,
        drop_difficult: bool = False,
    ) -> DatasetRecords:
        """One dataset's ``records`` (held as they are when already serialized), with the
        fields of ``columns`` (name: one value per record) set in every record read, and its
        ``difficult`` annotations left out when ``drop_difficult``."""
        if not isinstance(records, SerializedList | DatasetRecords):
            records = SerializedList(records)
        for name, column in (columns or {}).items():
            if len(column) != len(records):
                raise ValueError(
                    f"column {name!r} has {len(column)} values for {len(records)} records"
                )
        return cls([_Part(records, dict(columns or {}), drop_difficult)])

    @classmethod
    def concat(cls, parts: Sequence[DatasetRecords]) -> DatasetRecords:
        """The records of ``parts`` one after another."""
        joined, indices = [], []
        for records in parts:
            indices.append(records._index + np.array([len(joined), 0]))
            joined += records._parts
        return cls(joined, np.concatenate([np.zeros((0, 2), np.int64), *indices]))

    def select(self, positions: Sequence[int] | np.ndarray) -> DatasetRecords:
        """The records at ``positions``, in that order."""
        positions = np.asarray(positions, np.int64)
        selected = DatasetRecords(self._parts, self._index[positions])
        if self._summary is not None or self._landscape is not None:
            selected._landscape = self.landscape()[positions]
        return selected

    def summary(self) -> RecordSummary:
        """The records' :class:`RecordSummary`, from one pass over them (once: it is kept),
        which reads no added field (no proposals)."""
        if self._summary is None:
            self._summary = RecordSummary.of(
                map(self._without_columns, range(len(self))), len(self)
            )
        return self._summary

    def landscape(self) -> np.ndarray:
        """Whether each image is at least as wide as it is high (no pass over the records when
        they, or those they were selected from, were summarized)."""
        if self._landscape is None:
            summary = self.summary()
            self._landscape = summary.widths >= summary.heights
        return self._landscape

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, position: int) -> dict:  # type: ignore[override]
        if not isinstance(position, int | np.integer):
            raise TypeError(f"DatasetRecords indices are integers, not {type(position).__name__}")
        part, row = self._locate(position)
        record = _without_columns(part, row)
        for name, column in part.columns.items():
            record[name] = column[row]
        return record

    def _locate(self, position: int) -> tuple[_Part, int]:
        part_number, row = self._index[position].tolist()
        return self._parts[part_number], row

    def _without_columns(self, position: int) -> dict:
        return _without_columns(*self._locate(position))


def _without_columns(part: _Part, row: int) -> dict:
    """Record ``row`` of ``part`` as its dataset gives it (difficult objects left out if so),
    without the fields of the columns."""
    record = dict(part.records[row])
    if part.drop_difficult and "annotations" in record:
        record["annotations"] = [a for a in record["annotations"] if not a.get("difficult", 0)]
    return record
