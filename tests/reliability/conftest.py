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

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import TinyRun
from training_helpers import KilledAfterThree, SimulatedKillError, tiny_overrides, train_net_here

from detkit.data.datasets.shapes import ensure_shapes


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, write_proposal_file: Callable[..., Path]
) -> TinyRun:
    root = tmp_path_factory.mktemp("reliability_datasets")
    folder = ensure_shapes(root, "val")
    proposals = write_proposal_file(folder / "annotations.json", root / "shapes_val_proposals.pkl")
    return TinyRun(root, proposals)


@pytest.fixture(scope="module")
def killed(tiny_shapes, one_thread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-iteration run of the tiny model killed after iteration 3: model_0000001.pth,
    model_0000003.pth and last_checkpoint naming the second."""
    output = tmp_path_factory.mktemp("killed") / "run"
    with pytest.raises(SimulatedKillError):
        train_net_here(*tiny_overrides(tiny_shapes, output), trainer_class=KilledAfterThree)
    assert (output / "last_checkpoint").read_text() == "model_0000003.pth"
    return output


@pytest.fixture
def run_copy(killed: Path, tmp_path: Path) -> Path:
    """A copy of the killed run's folder, to damage or resume."""
    return Path(shutil.copytree(killed, tmp_path / "run"))
