"""Converted forms: a dataset's records and proposals are converted once, and never read stale.

Registered COCO datasets (and the shapes sets) and every proposal file a run uses are read from
a converted form under `DETKIT_CACHE_DIR` (default `~/.cache/detkit`): made on first use, named
by the SHA-256 of the source file, what else it depends on (the dataset a proposal file is
paired with, the image folder) and the version of detkit's rules, written under a temporary
name and renamed when complete, with a manifest of its files' sizes written last. A changed
source names another form; a form whose files were cut short, whose manifest is missing or names
another source is made again with one warning naming it; the unfinished copy of a killed
conversion is removed by the next one on its machine. Every check that refuses a bad file runs
at conversion, with the same message, and leaves no form behind; the warnings about what was
dropped are logged on every use. With several processes on a machine, the first converts and
the others wait, then map the same files. A cache folder that cannot be used ends the command
with one line naming it and `DETKIT_CACHE_DIR`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from reliability_helpers import SHAPES_CONFIG, TinyRun, run_tool
from training_helpers import one_error_line

from detkit.data import DatasetCatalog, get_detection_dataset_dicts
from detkit.data.proposal_store import BOXES, record_proposals


def tiny_training(tiny_run: TinyRun, output: Path, cache: Path, *arguments: str):
    """train_net on the tiny run's data with converted forms under ``cache``."""
    return run_tool(
        "train_net.py", "--config-file", SHAPES_CONFIG, *arguments,
        *tiny_run.overrides(output, 2, DATASETS__TEST="[]", DATASETS__PROPOSAL_FILES_TEST="[]"),
        root=tiny_run.root, DETKIT_CACHE_DIR=str(cache),
    )  # fmt: skip


def stores(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "proposals").iterdir() if not p.name.startswith("."))


def test_truncated_proposal_store(tiny_run: TinyRun, tmp_path: Path) -> None:
    """A proposal store whose boxes file was cut short → made again with one warning naming it;
    the run trains on the same proposals."""
    cache = tmp_path / "cache"
    first = tiny_training(tiny_run, tmp_path / "a", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    (store,) = stores(cache)
    intact = (store / BOXES).read_bytes()
    (store / BOXES).write_bytes(intact[: len(intact) // 2])
    second = tiny_training(tiny_run, tmp_path / "b", cache)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{store}: its file {BOXES} is missing or not of the size" in second.stdout
    assert stores(cache) == [store] and (store / BOXES).read_bytes() == intact


def test_cache_folder_that_is_a_file(tiny_run: TinyRun, tmp_path: Path) -> None:
    """DETKIT_CACHE_DIR naming a file → exit 2, one line naming it and the variable."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    result = tiny_training(tiny_run, tmp_path / "out", blocker)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"cannot use {blocker}/" in line and "set DETKIT_CACHE_DIR" in line


def test_proposal_file_changed_after_its_conversion(tmp_path: Path) -> None:
    """A proposal file rewritten after its store was made (same size) → a new store from the
    new boxes; the old one is never read."""
    records = [
        {"file_name": f"{i}.jpg", "image_id": i, "width": 100, "height": 80, "annotations": []}
        for i in range(3)
    ]
    path = tmp_path / "p.pkl"

    def write(x1: float) -> None:
        boxes = [np.array([[x1, 10, 50, 60]], np.float32) for _ in records]
        with open(path, "wb") as file:
            pickle.dump({"ids": [0, 1, 2], "boxes": boxes}, file)

    DatasetCatalog.register("changed_source", lambda: [dict(r) for r in records])
    try:
        write(5.0)
        before = record_proposals(get_detection_dataset_dicts(["changed_source"], [path])[1])
        write(7.0)
        after = record_proposals(get_detection_dataset_dicts(["changed_source"], [path])[1])
    finally:
        DatasetCatalog.remove("changed_source")
    assert before[0].tolist() == [[5, 10, 50, 60]] and after[0].tolist() == [[7, 10, 50, 60]]


def test_two_processes_convert_once_and_map_the_same_store(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """`--num-gpus 2` with no converted form in place → rank 0 converts the proposal file once,
    both processes map the same store."""
    cache = tmp_path / "cache"
    output = tmp_path / "out"
    result = tiny_training(tiny_run, output, cache, "--num-gpus", "2", "SOLVER.IMS_PER_BATCH=4")
    assert result.returncode == 0, result.stderr[-2000:]
    (store,) = stores(cache)
    logs = [(output / "log.txt").read_text(), (output / "log.txt.rank1").read_text()]
    assert [log.count("converting the proposals") for log in logs] == [1, 0]
    assert all(f"in {store} (" in log and "memory-mapped" in log for log in logs)
    assert os.listdir(cache / "proposals") == [store.name]
