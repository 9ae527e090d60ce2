"""Output files: a full disk, an unusable OUTPUT_DIR and cut metrics lines, reported or survived.

A disk that fills up while a checkpoint (or any file detkit replaces whole) is written ends
`train_net` with one line naming the file and "no space left on device" (exit status 2); the
file it would have replaced, the earlier checkpoints and `last_checkpoint` are as they were, and
no temporary file is left behind. An `OUTPUT_DIR` that is a file, a link to nothing or a path
under a file is refused before anything runs (exit 2). `metrics.json` is one JSON object per
line: a run that resumes after one killed mid-line drops the cut line (with a warning in
log.txt) before appending, and `tools/compare_runs.py` skips a line that is not a JSON object
with a warning naming the file and the line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from reliability_helpers import SHAPES_CONFIG, run_tool
from training_helpers import one_error_line, tiny_overrides, train_net_here


@pytest.fixture(autouse=True)
def single_thread(one_thread) -> None:
    """One intra-op thread (the root conftest's ``one_thread``): tiny models run faster."""


def checkpoint_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("model_*"))}


def test_full_disk_during_a_checkpoint_save(tiny_shapes, run_copy, monkeypatch, capsys) -> None:
    """A full disk while a checkpoint is written → exit 2, one line naming it and "no space left
    on device"; earlier checkpoints and last_checkpoint intact."""
    before = {**checkpoint_files(run_copy), "tag": (run_copy / "last_checkpoint").read_bytes()}
    real_open = os.open

    def open_on_a_full_disk(path, flags, mode=0o777, *, dir_fd=None):
        """Writes to a checkpoint's temporary file go to /dev/full, which fails every write
        with ENOSPC as a full disk does; the temporary file itself is created."""
        if Path(path).name.startswith(".model_"):
            os.close(real_open(path, flags, mode, dir_fd=dir_fd))
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_on_a_full_disk)
    status = train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy))
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err)
    assert status == 2
    assert f"train_net: {run_copy / 'model_0000005.pth'}: not written, no space left" in line
    after = {**checkpoint_files(run_copy), "tag": (run_copy / "last_checkpoint").read_bytes()}
    assert after == before
    assert not [p.name for p in run_copy.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["a-file", "a-dangling-link", "under-a-file"])
def test_output_dir_that_cannot_be_a_folder(tiny_shapes, tmp_path, kind, capsys) -> None:
    """OUTPUT_DIR that is a file, a link to nothing, or under a file → train_net exits 2 with one
    line naming it, before any work."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    output = {
        "a-file": notes,
        "a-dangling-link": tmp_path / "link",
        "under-a-file": notes / "run",
    }[kind]
    if kind == "a-dangling-link":
        output.symlink_to(tmp_path / "gone")
    before = sorted(tmp_path.iterdir())
    status = train_net_here(*tiny_overrides(tiny_shapes, output))
    line = one_error_line(capsys.readouterr().err)
    assert status == 2
    assert line.startswith(f"train_net: OUTPUT_DIR={output} ")
    assert line.endswith("; choose another OUTPUT_DIR")
    assert sorted(tmp_path.iterdir()) == before and notes.read_text() == "keep me"


def test_resume_after_a_metrics_line_was_cut(tiny_shapes, run_copy) -> None:
    """A run killed mid-way through a metrics.json line, resumed → the cut line dropped with a
    warning; every line of metrics.json one JSON object."""
    metrics = run_copy / "metrics.json"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"iteration": 4, "total_lo')
    assert train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy)) == 0
    lines = metrics.read_text().splitlines()
    assert metrics.read_text().startswith(whole)
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert [json.loads(line)["iteration"] for line in lines][-1] == 5
    log = (run_copy / "log.txt").read_text()
    assert f"{metrics}: its last line is cut short" in log and "total_lo" in log


def test_compare_runs_with_a_cut_metrics_line(tmp_path) -> None:
    """compare_runs over a finished run whose metrics.json holds a cut line → the table, and a
    warning naming the file and the line."""
    run = tmp_path / "compare" / "fast"
    (run / "inference" / "shapes_val").mkdir(parents=True)
    bbox = {"AP": 70.0, "AP50": 95.0, "AP75": 80.0}
    (run / "inference" / "shapes_val" / "evaluation.json").write_text(json.dumps({"bbox": bbox}))
    lines = [json.dumps({"iteration": i, "time": 0.5}) for i in range(10)]
    lines.insert(5, '{"iteration": 5, "ti{"iteration": 5, "time": 0.5}')  # cut, then appended to
    (run / "metrics.json").write_text("\n".join(lines) + '\n{"iteration": 10, "time": 0.')
    result = run_tool(
        "compare_runs.py",
        "--output-dir",
        tmp_path / "compare",
        "--run",
        f"fast=tools/train_net.py:{SHAPES_CONFIG}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "| fast | 70.00 | 95.00 | 80.00 | 0.5000 |"
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and "Traceback" not in result.stderr
    assert warnings[0].startswith(f"{run / 'metrics.json'}:6: not a JSON object, skipped")
    assert warnings[1].startswith(f"{run / 'metrics.json'}:12: not a JSON object, skipped")
