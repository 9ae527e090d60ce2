"""Fixtures for the tests of detkit's compiled RoI ops (helpers are in ``roi_testing.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


@pytest.fixture
def num_threads():
    """``num_threads(n)`` sets torch's intra-op thread count; the test's end restores it."""
    previous = torch.get_num_threads()
    try:
        yield torch.set_num_threads
    finally:
        torch.set_num_threads(previous)
