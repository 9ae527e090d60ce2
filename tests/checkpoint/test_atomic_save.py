"""Saving is atomic: a crash mid-save leaves the previous checkpoint, its tag and nothing else.

The crash is played by a ``torch.save`` that writes part of the file and fails, or by a
checkpointable whose ``state_dict`` fails; afterwards the folder must hold exactly what it held
before, and resuming must load the earlier weights.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_default_config
from detkit.solver import build_lr_scheduler
from detkit.utils.file_io import (
    DiskFullError,
    interrupted_writes,
    write_atomically,
    write_bytes_atomically,
)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_weights(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)


class Counter:
    """A checkpointable; with ``fail`` its state_dict raises, as a crash in the middle."""

    def __init__(self) -> None:
        self.count, self.fail = 0, False

    def state_dict(self) -> dict:
        if self.fail:
            raise RuntimeError("state_dict crashed")
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]


@pytest.fixture
def saved_a(tmp_path: Path) -> tuple[nn.Module, Counter, dict[str, torch.Tensor]]:
    """``model_a`` saved; then the model changes, as it would by training on."""
    model, counter = make_model(0), Counter()
    counter.count = 5
    DetectionCheckpointer(model, str(tmp_path), counter=counter).save("model_a", iteration=4)
    weights_a = copy_state(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    counter.count = 9
    return model, counter, weights_a


def assert_only_model_a_left(folder: Path, weights_a: dict[str, torch.Tensor]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["last_checkpoint", "model_a.pth"]
    assert (folder / "last_checkpoint").read_text().strip() == "model_a.pth"
    fresh, counter = make_model(1), Counter()
    extra = DetectionCheckpointer(fresh, str(folder), counter=counter).resume_or_load(
        "", resume=True
    )
    assert_weights(fresh, weights_a)
    assert counter.count == 5 and extra["iteration"] == 4


def test_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, saved_a, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, counter, weights_a = saved_a
    real_save = torch.save

    def crashing_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)  # most of the bytes reach the file ...
        file.truncate(file.tell() // 2)
        raise OSError("No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(torch, "save", crashing_save)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), counter=counter)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_b", iteration=8)
    monkeypatch.undo()
    assert_only_model_a_left(tmp_path, weights_a)


def test_crash_while_collecting_state_keeps_the_previous_checkpoint(
    tmp_path: Path, saved_a
) -> None:
    model, counter, weights_a = saved_a
    counter.fail = True
    checkpointer = DetectionCheckpointer(model, str(tmp_path), counter=counter)
    with pytest.raises(RuntimeError, match="state_dict crashed"):
        checkpointer.save("model_b", iteration=8)
    assert_only_model_a_left(tmp_path, weights_a)


def test_interrupt_while_replacing_the_tag_keeps_the_previous_tag(
    tmp_path: Path, saved_a, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, counter, _ = saved_a
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == "last_checkpoint":
            raise KeyboardInterrupt  # killed just before the new tag takes the old one's place
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), counter=counter)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_b", iteration=8)
    monkeypatch.undo()
    # model_b.pth is complete (renamed into place before the tag); the tag still names model_a
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last_checkpoint", "model_a.pth", "model_b.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_a.pth"
    assert torch.load(tmp_path / "model_b.pth", weights_only=True)["iteration"] == 8


def test_checkpoint_with_optimizer_and_schedule_loads_weights_only(tmp_path: Path) -> None:
    model = make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = get_default_config()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 10, [5]
    scheduler = build_lr_scheduler(cfg, optimizer)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler).save(
        "model_final", iteration=9, seed=3
    )
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert set(data) == {"model", "optimizer", "scheduler", "iteration", "seed"}
    assert data["scheduler"] == {"last_epoch": 1}
    momentum = data["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, model[0].weight.grad)  # first step: buffer = gradient


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    write_bytes_atomically(tmp_path / "text.txt", "grüße")
    write_atomically(tmp_path / "data.bin", lambda file: file.write(b"\x00\x01"))
    assert (tmp_path / "text.txt").read_bytes() == "grüße".encode()
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01"
    for name in ("text.txt", "data.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path, error) -> None:
    def failing(file):
        file.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        write_atomically(tmp_path / "new.bin", failing)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        write_atomically(tmp_path / "old.txt", failing)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]
    assert (tmp_path / "old.txt").read_text() == "old"


def test_write_bytes_atomically_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    write_bytes_atomically(target, b"first")
    write_bytes_atomically(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_only_write_atomically_temporaries_count_as_interrupted_writes(tmp_path: Path) -> None:
    """The clean-up after a killed save finds the temporary file of a write under way, and
    none of the files that merely look like one."""
    lookalikes = [".x.pth.keep", ".x.pth.k2j4x9", ".x.pth.0123456789ab.detkit-tmp.old"]
    for name in lookalikes:
        (tmp_path / name).write_text("user data")
    during = []

    def write(file) -> None:
        during.extend(interrupted_writes(tmp_path, "x.pth"))
        file.write(b"data")

    write_atomically(tmp_path / "x.pth", write)
    assert len(during) == 1 and during[0].name.startswith(".x.pth.")
    assert interrupted_writes(tmp_path, "x.pth") == []
    assert interrupted_writes(tmp_path, "y.pth") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*lookalikes, "x.pth"])


def test_full_disk_is_named_under_torchs_own_error(tmp_path: Path) -> None:
    """torch's writer turns a full disk into "unexpected pos …": the error says the disk is full
    and names the file; the previous file is kept and no temporary is left."""
    target = tmp_path / "model.pth"
    target.write_bytes(b"previous")

    def write(file) -> None:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    with pytest.raises(DiskFullError) as error:
        write_atomically(target, write)
    assert str(error.value).startswith(f"{target}: not written, no space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    assert target.read_bytes() == b"previous"
