"""Makes the ``rpn`` package importable, as projects/RPN/train_net.py does by living beside it;
the tiny shapes fixtures come from the repository's root conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


@pytest.fixture(scope="module", autouse=True)
def single_threaded(one_thread) -> None:
    """Every test here runs with one intra-op thread (the root conftest's ``one_thread``)."""
