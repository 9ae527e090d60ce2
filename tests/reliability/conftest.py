"""Shared pieces of the reliability suite: tiny data on disk for real ``tools/train_net.py``
processes, and a runner for them.

Every case in ``tests/reliability/test_*.py`` is one hostile input or interruption, and its
test function's docstring says it in one sentence (wrapped as ruff needs) as ``what goes in →
what detkit does`` (for example ``"Two COCO images with the same id → refused, naming the
file and the id"``); each module's docstring states its area's rules, its first line the
heading. ``tests/reliability/report.py`` turns them and each case's outcome into
docs/reliability.md. A case asserts the outcome: the message names the file, key or value, the
exit status, and that nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import TinyRun

from detkit.data.datasets.shapes import ensure_shapes


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, write_proposal_file: Callable[..., Path]
) -> TinyRun:
    root = tmp_path_factory.mktemp("reliability_datasets")
    folder = ensure_shapes(root, "val")
    proposals = write_proposal_file(folder / "annotations.json", root / "shapes_val_proposals.pkl")
    return TinyRun(root, proposals)
