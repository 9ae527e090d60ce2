"""Named datasets and their metadata: the catalogs every loader and evaluator looks up."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from ..utils.errors import UserError
from .validation import DatasetError, check_dataset_dicts


class UnknownDatasetError(UserError, KeyError):
    """A dataset name that is not registered (a ``KeyError``, as detectron2's catalog raises)."""

    def __str__(self) -> str:
        return str(self.args[0])  # the message, not KeyError's quoted repr of it


class _DatasetCatalog:
    """Maps a dataset name to a function that returns its list of dataset dicts.

    A dataset dict holds ``file_name``, ``height``, ``width``, ``image_id`` and ``annotations``
    (each with ``bbox`` as absolute XYXY pixels, or as its ``bbox_mode`` says, and
    ``category_id`` in ``[0, K)``). What a function registered in Python returns is checked
    and converted by the rules COCO and VOC files get
    (:func:`~detkit.data.validation.check_dataset_dicts`); detkit's own loaders, which apply
    them as they read, register with ``checked=True`` and may return any sequence of dicts
    (the COCO loader's is memory-mapped from the cache, :mod:`detkit.data.cache`).
    """

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], list[dict]]] = {}
        self._checked: set[str] = set()  # names whose loader applies the rules itself

    def register(self, name: str, loader: Callable[[], list[dict]], checked: bool = False) -> None:
        if not callable(loader):
            raise TypeError(f"DatasetCatalog.register({name!r}): the loader must be callable")
        if name in self._loaders:
            raise ValueError(f"dataset {name!r} is already registered")
        self._loaders[name] = loader
        if checked:
            self._checked.add(name)

    def check_registered(self, name: str) -> None:
        """Raises :class:`UnknownDatasetError` (with the closest registered name) unless ``name``
        is registered; loads nothing, so a command can check its datasets before its work."""
        if name not in self._loaders:
            close = difflib.get_close_matches(name, self._loaders, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._loaders))
            raise UnknownDatasetError(
                f"dataset {name!r} is not registered{hint} Registered: {known}"
            )

    def get(self, name: str) -> Sequence[dict]:
        """Loads and returns the dataset dicts of ``name``."""
        self.check_registered(name)
        dicts = self._loaders[name]()
        if name in self._checked:
            return dicts
        if not isinstance(dicts, list):
            raise DatasetError(
                f"dataset {name!r}: its loader returned a {type(dicts).__name__}, not a list "
                "of dicts"
            )
        return check_dataset_dicts(dicts, f"dataset {name!r}")

    def list(self) -> list[str]:
        return sorted(self._loaders)

    def remove(self, name: str) -> None:
        self._loaders.pop(name)
        self._checked.discard(name)

    def __contains__(self, name: str) -> bool:
        return name in self._loaders


class Metadata:
    """Facts about a dataset (``thing_classes``, ``evaluator_type``, …) as attributes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def set(self, **facts: Any) -> Metadata:
        for key, value in facts.items():
            existing = getattr(self, key, None)
            if existing is not None and existing != value:  # e.g. a file's other classes
                raise DatasetError(
                    f"metadata {key!r} of dataset {self.name!r} is already {existing!r}; "
                    f"refusing to change it to {value!r}"
                )
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


class _MetadataCatalog:
    def __init__(self) -> None:
        self._metadata: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        """The metadata of ``name``, created empty on first use."""
        return self._metadata.setdefault(name, Metadata(name))

    def remove(self, name: str) -> None:
        self._metadata.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
