"""detkit.data.cache: converted forms found by what they were made from, made once, atomically."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from detkit.data import cache
from detkit.data.cache import MANIFEST, converted, source_digest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_VARIABLE, str(folder))
    return folder


def writer(calls: list, text: str = "made"):
    """A build function that writes one file and counts its calls."""

    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "data.txt").write_text(text)
        return {"note": text}

    return build


def test_the_root_follows_the_variable_then_xdg(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(cache.CACHE_VARIABLE, str(tmp_path / "a"))
    assert cache.cache_root() == tmp_path / "a"
    monkeypatch.delenv(cache.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "detkit"


def test_made_once_then_found_without_building(cache_dir, tmp_path) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")
    calls: list = []
    folder, manifest = converted("things", source, {"k": 1}, writer(calls))
    again, manifest_again = converted("things", source, {"k": 1}, writer(calls))
    assert len(calls) == 1 and folder == again and manifest == manifest_again
    assert folder.parent == cache_dir / "things" and (folder / "data.txt").read_text() == "made"
    assert manifest["note"] == "made" and manifest["files"] == {"data.txt": 4}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no partial copy left


def test_another_key_or_changed_source_names_another_folder(cache_dir, tmp_path) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")
    calls: list = []
    first, _ = converted("things", source, {"k": 1}, writer(calls))
    other_key, _ = converted("things", source, {"k": 2}, writer(calls))
    source.write_text('{"a": 1}')
    changed, _ = converted("things", source, {"k": 1}, writer(calls))
    assert len({first, other_key, changed}) == 3 and len(calls) == 3


def test_the_hash_is_kept_until_the_file_changes(cache_dir, tmp_path, monkeypatch) -> None:
    source = tmp_path / "s.bin"
    source.write_bytes(b"a" * 1000)
    hashed = []
    real = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda *a: hashed.append(1) or real(*a))
    first = source_digest(source)
    assert source_digest(source) == first and len(hashed) == 1
    times = os.stat(source)
    source.write_bytes(b"b" * 1000)  # same size; the modification time put back
    os.utime(source, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert source_digest(source) != first and len(hashed) == 2  # the change time differs


@pytest.mark.parametrize("damage", ["truncated", "no manifest", "foreign"])
def test_a_damaged_folder_is_made_again_with_a_line(cache_dir, tmp_path, caplog, damage) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")
    calls: list = []
    folder, _ = converted("things", source, {"k": 1}, writer(calls))
    if damage == "truncated":
        (folder / "data.txt").write_text("ma")
        expected = "its file data.txt is missing or not of the size its manifest records"
    elif damage == "no manifest":
        (folder / MANIFEST).unlink()
        expected = "it has no manifest (an interrupted or foreign copy)"
    else:
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["made_from"]["source_sha256"] = "0" * 64
        (folder / MANIFEST).write_text(json.dumps(manifest))
        expected = "it was made from another source or with other settings"
    again, _ = converted("things", source, {"k": 1}, writer(calls, "new"))
    assert again == folder and len(calls) == 2 and (folder / "data.txt").read_text() == "new"
    assert f"{folder}: {expected}; making it again" in caplog.text


def test_a_failed_build_leaves_nothing(cache_dir, tmp_path) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")

    def failing(folder: Path) -> dict:
        (folder / "half.txt").write_text("x")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        converted("things", source, {}, failing)
    assert list((cache_dir / "things").iterdir()) == []


def test_when_another_process_finished_first_its_copy_is_used(cache_dir, tmp_path) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")
    calls: list = []

    def build_while_another_finishes(folder: Path) -> dict:
        converted("things", source, {}, writer(calls, "theirs"))  # another process, first
        return writer(calls, "ours")(folder)

    folder, manifest = converted("things", source, {}, build_while_another_finishes)
    assert len(calls) == 2 and manifest["note"] == "theirs"
    assert (folder / "data.txt").read_text() == "theirs"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # ours removed


def test_an_unusable_cache_folder_is_named(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.CACHE_VARIABLE, str(blocker))
    source = tmp_path / "s.json"
    source.write_text("{}")
    with pytest.raises(cache.CacheError, match=rf"cannot use {blocker}/hashes .*DETKIT_CACHE_DIR"):
        converted("things", source, {}, writer([]))


def test_the_copy_a_killed_conversion_left_is_removed(cache_dir, tmp_path) -> None:
    source = tmp_path / "s.json"
    source.write_text("{}")
    calls: list = []
    folder, _ = converted("things", source, {}, writer(calls))
    shutil.rmtree(folder)
    host = socket.gethostname()
    ended = _ended_pid()
    dead = folder.with_name(f".{folder.name}.{host}-{ended}-abcd1234.partial")
    alive = folder.with_name(f".{folder.name}.{host}-{os.getpid()}-abcd1234.partial")
    other_machine = folder.with_name(f".{folder.name}.elsewhere-{ended}-abcd1234.partial")
    for partial in (dead, alive, other_machine):
        partial.mkdir()
    converted("things", source, {}, writer(calls))
    assert not dead.exists() and alive.exists() and other_machine.exists()


def _ended_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
