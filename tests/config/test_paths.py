"""detkit.config.paths: what keeps a path from being read; where a relative one was looked for."""

from __future__ import annotations

import os

from detkit.config.paths import path_problem


def test_a_readable_file_and_folder_have_no_problem(tmp_path) -> None:
    (tmp_path / "a.json").write_text("{}")
    assert path_problem(tmp_path / "a.json") is None
    assert path_problem(tmp_path, folder=True) is None


def test_each_problem_in_words(tmp_path) -> None:
    (tmp_path / "a.json").write_text("{}")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    assert path_problem(tmp_path / "gone.json") == "no such file"
    assert path_problem(tmp_path / "dangling") == "no such file (a link to nothing)"
    assert path_problem(tmp_path) == "is a folder, not a file"
    assert path_problem(tmp_path / "a.json", folder=True) == "is a file, not a folder"
    assert path_problem(tmp_path / "fifo") == "is not a regular file"


def test_a_relative_path_names_where_it_was_looked_for(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_problem("data/train.json") == (
        f"no such file (looked for {tmp_path / 'data' / 'train.json'}; relative paths are read "
        "from the working directory)"
    )
