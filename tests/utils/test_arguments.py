"""The tools' shared argparse types (detkit.utils.arguments) and output-path checks
(detkit.utils.paths): what they accept, what they refuse, and that checking creates nothing."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from detkit.utils.arguments import output_file, output_folder, positive_int, probability
from detkit.utils.paths import OutputPathError, check_output_file, check_output_folder


def test_counts_are_positive_whole_numbers() -> None:
    assert positive_int("1") == 1 and positive_int("2000") == 2000
    for text in ("0", "-5", "2.5", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(text)):
            positive_int(text)


def test_probabilities_are_finite_numbers_from_zero_to_one() -> None:
    assert [probability(t) for t in ("0", "0.5", "1", "1e-3")] == [0.0, 0.5, 1.0, 0.001]
    for text in ("2", "-0.1", "nan", "inf", "high"):
        with pytest.raises(argparse.ArgumentTypeError, match=text):
            probability(text)


def test_an_output_file_may_be_new_in_new_folders(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    assert output_file(str(target)) == target
    monkeypatch.chdir(tmp_path)
    assert check_output_file("out.json") == Path("out.json")
    assert sorted(tmp_path.iterdir()) == []  # checking creates nothing, not even its probe


def test_output_paths_through_a_file_or_onto_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    with pytest.raises(OutputPathError, match=f"cannot write {taken}/x.json: {taken} is a file"):
        check_output_file(taken / "x.json")
    with pytest.raises(OutputPathError, match=f"{tmp_path} is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(OutputPathError, match=f"{taken} is a file, not a folder"):
        check_output_folder(taken)
    with pytest.raises(argparse.ArgumentTypeError, match="is a file, not a folder"):
        output_folder(str(taken))
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"
    assert sorted(tmp_path.iterdir()) == [taken] and taken.read_text() == "mine"
