"""The dataset list held as one byte buffer, so that data-loader workers share it.

A forked worker shares its parent's memory only until it writes to a page, and merely reading a
Python object writes to it (its reference count): a worker that goes over a list of dataset
dicts ends up with a private copy of every page it read, the whole list per worker
(copy-on-read). :class:`SerializedList` holds the records pickled into one NumPy byte array
plus an array of offsets, two objects whose pages no one writes, so every worker keeps
sharing them; each read unpickles a fresh record.

Saved into a folder (:meth:`SerializedList.save`), the two arrays are memory-mapped by every
process that opens it (:meth:`SerializedList.open`): the records of a large dataset then take
one copy in the machine's page cache, however many processes train on it.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

BUFFER_FILE = "records.npy"
OFFSETS_FILE = "offsets.npy"

_PICKLE_ERRORS = (pickle.PicklingError, TypeError, AttributeError)


class SerializedList(Sequence):
    """``records`` (dataset dicts) pickled into one shared buffer; ``self[i]`` is a fresh copy
    of record ``i``, which its reader may change freely."""

    def __init__(self, records: Iterable[dict]) -> None:
        self.folder: Path | None = None  # where it was opened from, if it was
        stream = io.BytesIO()
        ends = []
        for index, record in enumerate(records):
            try:
                pickle.dump(record, stream, protocol=pickle.HIGHEST_PROTOCOL)
            except _PICKLE_ERRORS as error:
                raise ValueError(_unpicklable_message(index, record, error)) from None
            ends.append(stream.tell())
        self._offsets = np.asarray([0, *ends], dtype=np.int64)
        # a view of the stream's own buffer: no second copy of the bytes while building
        self._buffer = np.frombuffer(stream.getbuffer(), dtype=np.uint8)

    @classmethod
    def open(cls, folder: str | Path) -> SerializedList:
        """The records :meth:`save` wrote into ``folder``, memory-mapped read-only."""
        folder = Path(folder)
        records = cls.__new__(cls)
        records.folder = folder
        records._offsets = np.load(folder / OFFSETS_FILE, mmap_mode="r")
        records._buffer = np.load(folder / BUFFER_FILE, mmap_mode="r")
        return records

    def save(self, folder: str | Path) -> None:
        """Writes the records into ``folder`` as two ``.npy`` files (:meth:`open` reads them)."""
        np.save(Path(folder) / BUFFER_FILE, self._buffer)
        np.save(Path(folder) / OFFSETS_FILE, np.asarray(self._offsets))

    def __reduce__(self) -> tuple:
        """Opened from a folder, it travels to another process as its folder's name."""
        if self.folder is not None:
            return SerializedList.open, (self.folder,)
        return super().__reduce__()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> dict:  # type: ignore[override]
        if not isinstance(index, int | np.integer):
            raise TypeError(f"SerializedList indices are integers, not {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of a dataset of {len(self)}")
        start, end = self._offsets[index], self._offsets[index + 1]
        return pickle.loads(memoryview(self._buffer[start:end]))

    @property
    def nbytes(self) -> int:
        """The size of the pickled records, in bytes."""
        return self._buffer.nbytes + self._offsets.nbytes


def _unpicklable_message(index: int, record: dict, error: Exception) -> str:
    items = record.items() if isinstance(record, dict) else []
    keys = [key for key, value in items if not _picklable(value)]
    where = f"its key {keys[0]!r} holds" if keys else "it holds"
    name = record.get("file_name", "no file_name") if isinstance(record, dict) else "not a dict"
    return (
        f"dataset record {index} ({name}) cannot be held for the loader workers: {where} "
        f"something that cannot be pickled ({error}); dataset dicts hold plain data: numbers, "
        "strings, lists, dicts and NumPy arrays"
    )


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except _PICKLE_ERRORS:
        return False
    return True
