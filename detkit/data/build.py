"""Joining registered datasets and pairing them with their proposals."""

from __future__ import annotations

from collections.abc import Sequence

from .catalog import DatasetCatalog
from .proposal_store import proposal_column
from .records import DatasetRecords


def get_detection_dataset_dicts(
    names: Sequence[str],
    proposal_files: Sequence[str] | None = None,
    proposal_topk: int | None = None,
    proposal_min_size: float = 0.0,
    drop_difficult: bool = True,
    proposal_loader: str = "auto",
) -> DatasetRecords:
    """The dataset dicts of ``names``, one after another, with their proposals.

    ``proposal_files`` gives one file per dataset, read with ``proposal_loader`` from
    ``PROPOSAL_LOADER_REGISTRY`` (``auto``: pickle or ``.mat`` by extension;
    ``selective_search``: computed on first use and cached there) into its store
    (:func:`~detkit.data.proposal_store.proposal_column`: paired and cleaned once, then
    memory-mapped), from which each record reads its proposals (``proposal_rows``): clipped,
    smaller than ``proposal_min_size`` dropped, the ``proposal_topk`` best kept; duplicates are
    left to the model, which removes them on the grid of the map it pools from. ``difficult``
    VOC objects are left out unless ``drop_difficult=False`` (they are kept for evaluation).

    Returns a :class:`~detkit.data.records.DatasetRecords`: a read-only sequence whose items
    are fresh dicts, holding the records as their datasets do (memory-mapped for detkit's own
    loaders), not as a Python list.
    """
    if isinstance(names, str):
        names = [names]
    if proposal_files is not None and len(proposal_files) != len(names):
        raise ValueError(
            f"{len(names)} datasets but {len(proposal_files)} proposal files; give one per dataset"
        )
    parts = []
    for index, name in enumerate(names):
        records = DatasetCatalog.get(name)
        if not len(records):
            raise ValueError(f"dataset {name!r} is empty")
        columns = {}
        if proposal_files is not None:
            columns["proposal_rows"] = proposal_column(
                proposal_files[index],
                proposal_loader,
                records,
                source=f"{proposal_files[index]} (dataset {name!r})",
                topk=proposal_topk,
                min_size=proposal_min_size,
            )
        parts.append(DatasetRecords.of(records, columns, drop_difficult=drop_difficult))
    return DatasetRecords.concat(parts)
