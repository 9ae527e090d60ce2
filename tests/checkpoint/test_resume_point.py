"""The checkpoint ``--resume`` continues is read once: ``read_resume_point`` checks every record's
checksum and loads it in one read, and the checkpointer loads what was read instead of reading
the file again; a cheap look reads only its index (no tensor, no checksum)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.checkpoint import DetectionCheckpointer, ResumePoint, read_resume_point


def save(folder: Path, name: str, seed: int) -> Path:
    """A checkpoint of a small model and its optimizer, at iteration ``name``'s number."""
    torch.manual_seed(seed)
    model = nn.Linear(64, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    checkpointer = DetectionCheckpointer(model, str(folder), optimizer=optimizer)
    checkpointer.save(name, iteration=int(name.split("_")[1]), seed=seed)
    return folder / f"{name}.pth"


def count_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The files whose records' checksums were verified (``checksums``), that were loaded in
    full (``loads``) and whose index only was read (``index``, a memory-mapped load)."""
    reads: dict[str, list[str]] = {"checksums": [], "loads": [], "index": []}
    testzip, load = zipfile.ZipFile.testzip, torch.load

    def counting_testzip(archive: zipfile.ZipFile):
        reads["checksums"].append(Path(archive.filename).name)
        return testzip(archive)

    def counting_load(file, *args, **options):
        reads["index" if options.get("mmap") else "loads"].append(Path(file).name)
        return load(file, *args, **options)

    monkeypatch.setattr(zipfile.ZipFile, "testzip", counting_testzip)
    monkeypatch.setattr(torch, "load", counting_load)
    return reads


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_full_read_checks_and_loads_once_and_hands_the_content_over_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path, "model_0000001", seed=5)
    path = save(tmp_path, "model_0000003", seed=5)
    reads = count_reads(monkeypatch)
    point = read_resume_point(str(tmp_path))
    assert (point.path, point.skipped) == (str(path), ())
    assert point.training_state == {"iteration": 3, "seed": 5}
    assert reads == {"checksums": [path.name], "loads": [path.name], "index": []}

    content = point.take_content()
    assert content["iteration"] == 3 and set(content["model"]) == {"weight", "bias"}
    assert reads["loads"] == [path.name]  # handed over, not read again
    assert point.take_content()["iteration"] == 3  # taken before: read again, checked
    assert reads == {"checksums": [path.name] * 2, "loads": [path.name] * 2, "index": []}


def test_the_checkpointer_loads_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, "model_0000003", seed=5)
    saved = torch.load(path, weights_only=True)
    model = nn.Linear(64, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    reads = count_reads(monkeypatch)
    extra = checkpointer.resume_or_load("", resume=True)
    assert reads == {"checksums": [path.name], "loads": [path.name], "index": []}
    assert extra == {"iteration": 3, "seed": 5}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["model"].items())
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, saved["optimizer"]["state"][0]["momentum_buffer"])


def test_an_index_look_reads_no_tensor_and_no_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, "model_0000003", seed=5)
    reads = count_reads(monkeypatch)
    point = read_resume_point(str(tmp_path), full=False)
    assert (point.path, point.training_state) == (str(path), {"iteration": 3, "seed": 5})
    assert reads == {"checksums": [], "loads": [], "index": [path.name]}


def test_a_record_failing_its_checksum_is_skipped_by_a_full_read_and_named_when_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = save(tmp_path, "model_0000001", seed=5)
    newest = save(tmp_path, "model_0000003", seed=5)
    flip_a_byte(newest)
    assert read_resume_point(str(tmp_path), full=False).path == str(newest)  # index intact
    point = read_resume_point(str(tmp_path))
    assert point.path == str(older) and point.training_state == {"iteration": 1, "seed": 5}
    (skipped,) = point.skipped
    assert skipped.startswith(f"skipped {newest}, which is corrupt (its record ")
    assert skipped.endswith("fails its checksum)")

    model = nn.Linear(64, 32)
    with caplog.at_level(logging.WARNING, logger="detkit"):
        DetectionCheckpointer(model).load_resume_point(point)
    assert f"skipped {newest}, which is corrupt" in caplog.text
    assert f"resuming from {older}, the newest intact checkpoint" in caplog.text


def test_a_point_not_read_in_full_loads_its_file_checked(tmp_path: Path) -> None:
    path = save(tmp_path, "model_0000003", seed=5)
    flip_a_byte(path)
    with pytest.raises(ValueError, match=r"model_0000003\.pth: is corrupt \(its record .* fails"):
        ResumePoint(str(path)).take_content()
