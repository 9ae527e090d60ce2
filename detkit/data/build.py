"""Joining registered datasets and attaching their proposals."""

from __future__ import annotations

from collections.abc import Sequence

from .catalog import DatasetCatalog
from .proposals import attach_proposals, load_proposals


def get_detection_dataset_dicts(
    names: Sequence[str],
    proposal_files: Sequence[str] | None = None,
    proposal_topk: int | None = None,
    proposal_min_size: float = 0.0,
    drop_difficult: bool = True,
    proposal_loader: str = "auto",
) -> list[dict]:
    """The dataset dicts of ``names``, one after another, with their proposals attached.

    ``proposal_files`` gives one file per dataset, read with ``proposal_loader`` from
    ``PROPOSAL_LOADER_REGISTRY`` (``auto``: pickle or ``.mat`` by extension;
    ``selective_search``: computed on first use and cached there), and attached by
    :func:`attach_proposals` (clipped, smaller than ``proposal_min_size`` dropped, the
    ``proposal_topk`` best kept; duplicates are left to the model, which removes them on the grid
    of the map it pools from). ``difficult`` VOC objects are removed unless
    ``drop_difficult=False`` (they are kept for evaluation).
    """
    if isinstance(names, str):
        names = [names]
    if proposal_files is not None and len(proposal_files) != len(names):
        raise ValueError(
            f"{len(names)} datasets but {len(proposal_files)} proposal files; give one per dataset"
        )
    all_dicts = []
    for index, name in enumerate(names):
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise ValueError(f"dataset {name!r} is empty")
        if proposal_files is not None:
            attach_proposals(
                dicts,
                load_proposals(proposal_files[index], proposal_loader, dicts),
                source=f"{proposal_files[index]} (dataset {name!r})",
                topk=proposal_topk,
                min_size=proposal_min_size,
            )
        all_dicts += dicts
    if drop_difficult:
        for record in all_dicts:
            record["annotations"] = [a for a in record["annotations"] if not a.get("difficult", 0)]
    return all_dicts
