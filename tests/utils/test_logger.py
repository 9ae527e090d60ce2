"""setup_logger: what each rank of a run prints and where its log goes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detkit.utils.logger import restored_logging, setup_logger


def log_as_rank(rank: int, output: Path) -> None:
    with restored_logging():
        setup_logger(output, rank)
        logging.getLogger("detkit.test").info("an info line")
        logging.getLogger("detkit.test").warning("every rank warns about this")
        logging.getLogger("detkit.test").error(f"rank {rank} has an error of its own")


@pytest.mark.parametrize("rank", [1, 3])
def test_other_ranks_print_only_their_errors_and_keep_their_log_in_their_own_file(
    rank: int, tmp_path: Path, capsys
) -> None:
    """As detectron2: a warning every rank gives is printed once, by rank 0 (tests/engine's
    two-process run checks the files a real launch leaves)."""
    log_as_rank(rank, tmp_path)
    console = capsys.readouterr().out
    assert console.strip().splitlines() == [console.strip()]  # one line: the error
    assert console.startswith(f"[rank {rank}] ") and f"rank {rank} has an error" in console
    log = (tmp_path / f"log.txt.rank{rank}").read_text()
    assert all(f in log for f in ("an info line", "every rank warns", "has an error of its own"))
    assert [p.name for p in tmp_path.iterdir()] == [f"log.txt.rank{rank}"]


def test_rank_0_prints_info_and_up_and_writes_log_txt(tmp_path: Path, capsys) -> None:
    log_as_rank(0, tmp_path)
    console = capsys.readouterr().out
    assert all(f in console for f in ("an info line", "every rank warns", "has an error of its"))
    assert "[rank" not in console
    assert "every rank warns about this" in (tmp_path / "log.txt").read_text()
