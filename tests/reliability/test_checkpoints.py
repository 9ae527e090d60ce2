"""Checkpoints and weights: used whole, or refused naming the file.

Every load logs what it filled and what it left as initialised. `--eval-only` refuses weights
that leave any of the model's weights uninitialised (missing, or of another shape), naming how
many and which; `--allow-partial-weights` evaluates them anyway. Training from partial weights
(ImageNet backbones) is allowed and logged. A directory, an empty, truncated or corrupt file, a
file that is not a checkpoint, and weights holding NaN or infinity are refused with one line
naming the file (exit status 2 from `train_net`). `--resume` continues the newest intact
checkpoint: when the one `last_checkpoint` names is missing, empty, truncated or fails its
checksum, it warns and takes the newest intact `model_XXXXXXX.pth`; when none is intact it
stops (exit 2) instead of starting afresh. `last_checkpoint` must hold the plain name of a
checkpoint in its folder, as detkit writes it: a path elsewhere or bytes that are not text stop
`--resume` (exit 2) with one line naming the tag and what it holds. A save writes to a temporary
file `.<name>.<12 hex digits>.detkit-tmp` renamed into place; such files of saves killed
mid-write are removed when training starts, and no other file is. Paths go through detkit's
iopath `PathManager`, so any registered handler serves checkpoints and weights, also one that
cannot say whether a path is a folder (as iopath's HTTP handler); an address that cannot be
fetched is refused naming it. detectron2's model-zoo `.pkl` weights (pickles of numpy arrays,
protocols 2 to 5) load without running code: a pickle naming anything but plain data is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from iopath.common.file_io import PathHandler
from training_helpers import (
    file_states,
    final_weights,
    one_error_line,
    same_weights,
    tiny_config,
    tiny_overrides,
    train_net_here,
)

from detkit.checkpoint import (
    CheckpointFileError,
    CheckpointNotFoundError,
    DetectionCheckpointer,
    UnsafeCheckpointError,
    resumable_checkpoint,
)
from detkit.engine import DefaultTrainer
from detkit.modeling import build_model
from detkit.utils.file_io import PathManager


@pytest.fixture(autouse=True)
def single_thread(one_thread) -> None:
    """One intra-op thread (the root conftest's ``one_thread``): tiny models run faster."""


@pytest.fixture(scope="module")
def straight(tiny_shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 6-iteration run as ``killed``, never stopped."""
    output = tmp_path_factory.mktemp("straight") / "run"
    assert train_net_here(*tiny_overrides(tiny_shapes, output)) == 0
    return output


def tiny_model(tiny_shapes, *overrides: str) -> torch.nn.Module:
    return build_model(tiny_config(tiny_shapes, Path("unused"), 6, *overrides))


def eval_only(tiny_shapes, output: Path, weights: str | Path, *extra: str) -> int:
    test_sets = [
        f"DATASETS.TEST=[{tiny_shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
    ]
    options = [a for a in extra if a.startswith("--")]
    overrides = [a for a in extra if not a.startswith("--")]
    argv = tiny_overrides(tiny_shapes, output, 6, *test_sets, f"MODEL.WEIGHTS={weights}")
    return train_net_here("--eval-only", *options, *argv, *overrides)


def without_box_predictor(killed: Path, path: Path) -> Path:
    checkpoint = torch.load(killed / "model_0000003.pth", weights_only=True)
    model = checkpoint["model"]
    for name in [n for n in model if n.startswith("roi_heads.box_predictor.")]:
        del model[name]
    torch.save({"model": model}, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_eval_only_with_weights_of_another_box_head(tiny_shapes, killed, tmp_path, capsys) -> None:
    """--eval-only, weights of another box head → exit 2: the file, how many stay random, which."""
    status = eval_only(
        tiny_shapes, tmp_path / "eval", killed / "model_0000003.pth", "MODEL.ROI_BOX_HEAD.FC_DIM=16"
    )
    line = one_error_line(capsys.readouterr().err)
    assert status == 2
    assert f"{killed / 'model_0000003.pth'}: it leaves 6 of the model's" in line
    assert "roi_heads.box_head.fc6.weight" in line and "--allow-partial-weights" in line
    # no evaluation was written (eval-only keeps its config and log in inference/)
    assert not (tmp_path / "eval" / "inference" / tiny_shapes.name).exists()


def test_eval_only_with_weights_lacking_the_predictor(
    tiny_shapes, killed, tmp_path, capsys
) -> None:
    """--eval-only, weights without the box predictor → exit 2 naming the 4 missing weights."""
    weights = without_box_predictor(killed, tmp_path / "partial.pth")
    status = eval_only(tiny_shapes, tmp_path / "eval", weights)
    line = one_error_line(capsys.readouterr().err)
    assert status == 2
    assert "it leaves 4 of the model's" in line
    for name in ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"):
        assert f"roi_heads.box_predictor.{name}" in line
    # no evaluation was written (eval-only keeps its config and log in inference/)
    assert not (tmp_path / "eval" / "inference" / tiny_shapes.name).exists()


def test_eval_only_allows_partial_weights_on_request(tiny_shapes, killed, tmp_path) -> None:
    """--eval-only --allow-partial-weights, partial weights → evaluated; log names the missing."""
    weights = without_box_predictor(killed, tmp_path / "partial.pth")
    assert eval_only(tiny_shapes, tmp_path / "eval", weights, "--allow-partial-weights") == 0
    assert (tmp_path / "eval" / "inference" / tiny_shapes.name / "evaluation.json").is_file()
    log = (tmp_path / "eval" / "inference" / "log.txt").read_text()  # eval-only logs there
    assert "4 not in the file keep their initial values" in log
    assert "roi_heads.box_predictor.cls_score.weight" in log


def test_training_from_partial_weights_reports_them(tiny_shapes, killed, tmp_path, caplog) -> None:
    """Training from partial weights → allowed; the log counts what loaded, names the rest."""
    weights = without_box_predictor(killed, tmp_path / "partial.pth")
    cfg = tiny_config(tiny_shapes, tmp_path / "out", 6, f"MODEL.WEIGHTS={weights}")
    trainer = DefaultTrainer(cfg)
    total = len(trainer.model.state_dict())
    with caplog.at_level(logging.INFO, logger="fvcore"):
        trainer.resume_or_load(resume=False)
    assert f"loaded {total - 4} of the model's {total} weights" in caplog.text
    assert "roi_heads.box_predictor.bbox_pred.bias" in caplog.text
    saved = torch.load(weights, weights_only=True)["model"]
    state = trainer.model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in saved.items())


def test_nan_in_a_weight(tiny_shapes, killed, tmp_path) -> None:
    """A checkpoint with a NaN weight → refused naming the file and the tensor; model untouched."""
    checkpoint = torch.load(killed / "model_0000003.pth", weights_only=True)
    checkpoint["model"]["roi_heads.box_head.fc7.weight"][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pth")
    model = tiny_model(tiny_shapes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointFileError) as error:
        DetectionCheckpointer(model).load(str(tmp_path / "nan.pth"))
    assert str(error.value).startswith(f"{tmp_path / 'nan.pth'}: 1 weights hold NaN or infinite")
    assert "roi_heads.box_head.fc7.weight" in str(error.value)
    assert same_weights(model.state_dict(), before)


def test_infinity_in_torchvision_style_weights(tiny_shapes, tmp_path) -> None:
    """A torchvision-style state_dict with an inf value → refused naming file and tensor."""
    model = tiny_model(tiny_shapes)
    backbone = {
        k[len("backbone.") :]: v.clone()
        for k, v in model.state_dict().items()
        if k.startswith("backbone.")
    }
    name = next(iter(backbone))
    backbone[name].view(-1)[0] = float("inf")
    torch.save(backbone, tmp_path / "imagenet.pth")
    with pytest.raises(CheckpointFileError, match=rf"imagenet\.pth: 1 weights .*{re.escape(name)}"):
        DetectionCheckpointer(model).load(str(tmp_path / "imagenet.pth"))


def test_empty_checkpoint(tiny_shapes, tmp_path) -> None:
    """A 0-byte checkpoint → one-line ValueError naming the file, not a bare EOFError."""
    (tmp_path / "empty.pth").touch()
    with pytest.raises(CheckpointFileError) as error:
        DetectionCheckpointer(tiny_model(tiny_shapes)).load(str(tmp_path / "empty.pth"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'empty.pth'}: is empty (0 bytes)")
    assert "\n" not in message and isinstance(error.value, ValueError)


def test_directory_as_weights(tiny_shapes, killed) -> None:
    """A run's directory as weights → says it is a directory, names its newest checkpoint."""
    with pytest.raises(CheckpointFileError) as error:
        DetectionCheckpointer(tiny_model(tiny_shapes)).load(str(killed))
    assert str(error.value) == (
        f"{killed}: is a directory, not a checkpoint file; name a file in it, e.g. its newest "
        f"checkpoint {killed / 'model_0000003.pth'}"
    )


def test_truncated_weights_in_train_net(tiny_shapes, killed, tmp_path, capsys) -> None:
    """Truncated MODEL.WEIGHTS for training → exit 2, one line naming the file; nothing saved."""
    weights = tmp_path / "half.pth"
    shutil.copy(killed / "model_0000003.pth", weights)
    truncate(weights)
    output = tmp_path / "out"
    status = train_net_here(*tiny_overrides(tiny_shapes, output), f"MODEL.WEIGHTS={weights}")
    line = one_error_line(capsys.readouterr().err)
    assert status == 2
    assert f"{weights}: is not a readable checkpoint: truncated or corrupt" in line
    assert not list(output.glob("model_*.pth"))


def test_text_file_as_weights(tiny_shapes, tmp_path) -> None:
    """A text file as weights → refused naming the file, not an unpickler traceback."""
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointFileError, match=r"notes\.pth: is not a readable checkpoint"):
        DetectionCheckpointer(tiny_model(tiny_shapes)).load(str(tmp_path / "notes.pth"))


def test_unsafe_pickle_in_train_net(tiny_shapes, killed, tmp_path, capsys) -> None:
    """--eval-only, checkpoint with a pickled object → exit 2, one line; the object never built."""
    checkpoint = torch.load(killed / "model_0000003.pth", weights_only=True)
    checkpoint["extra"] = Payload()
    torch.save(checkpoint, tmp_path / "unsafe.pth")
    Payload.built = 0
    status = eval_only(tiny_shapes, tmp_path / "eval", tmp_path / "unsafe.pth")
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "needs arbitrary unpickling" in line and "unsafe.pth" in line
    assert Payload.built == 0


class Payload:
    """An object only a full unpickler rebuilds (it counts how often)."""

    built = 0

    def __setstate__(self, state: dict) -> None:
        Payload.built += 1


class FolderHandler(PathHandler):
    """Serves ``reliability-test://NAME`` from a local folder, as a remote store would."""

    PREFIX = "reliability-test://"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _local(self, path: str) -> str:
        return str(self.folder / path[len(self.PREFIX) :])

    def _get_local_path(self, path: str, **kwargs) -> str:
        return self._local(path)

    def _exists(self, path: str, **kwargs) -> bool:
        return Path(self._local(path)).exists()

    def _isdir(self, path: str, **kwargs) -> bool:
        return Path(self._local(path)).is_dir()

    def _open(self, path: str, mode: str = "r", **kwargs):
        return open(self._local(path), mode)


@pytest.fixture
def handler(killed: Path) -> FolderHandler:
    handler = FolderHandler(killed)
    PathManager.register_handler(handler)
    return handler


def test_weights_through_an_iopath_handler(tiny_shapes, killed, handler, tmp_path) -> None:
    """MODEL.WEIGHTS via a registered iopath handler → loaded, same weights as the local file."""
    cfg = tiny_config(
        tiny_shapes, tmp_path / "out", 6, "MODEL.WEIGHTS=reliability-test://model_0000003.pth"
    )
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    saved = torch.load(killed / "model_0000003.pth", weights_only=True)["model"]
    assert same_weights(trainer.model.state_dict(), saved)


def test_missing_file_through_an_iopath_handler(tiny_shapes, handler) -> None:
    """A handler path that names nothing → not found, naming the path."""
    with pytest.raises(
        CheckpointNotFoundError, match=r"checkpoint not found: reliability-test://nothing\.pth"
    ):
        DetectionCheckpointer(tiny_model(tiny_shapes)).load("reliability-test://nothing.pth")


def test_resume_past_a_truncated_newest_checkpoint(tiny_shapes, run_copy, straight) -> None:
    """--resume, newest checkpoint truncated → warns, resumes the previous; bit-exact end."""
    truncate(run_copy / "model_0000003.pth")
    assert train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy)) == 0
    log = (run_copy / "log.txt").read_text()
    assert f"skipped {run_copy / 'model_0000003.pth'}, which is not a readable checkpoint" in log
    assert f"resuming from {run_copy / 'model_0000001.pth'}, the newest intact" in log
    assert "Resuming at iteration 2" in log
    assert same_weights(final_weights(run_copy), final_weights(straight))


def test_resume_past_a_checkpoint_failing_its_checksum(run_copy, caplog) -> None:
    """--resume, a flipped byte in the newest checkpoint → checksum fails, previous resumed."""
    path = run_copy / "model_0000003.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="detkit"):
        assert resumable_checkpoint(str(run_copy)) == str(run_copy / "model_0000001.pth")
    assert "model_0000003.pth, which is corrupt" in caplog.text


def test_resume_when_last_checkpoint_names_a_deleted_file(run_copy, caplog) -> None:
    """last_checkpoint names a deleted file → the newest periodic one is resumed, with a warning."""
    (run_copy / "model_0000003.pth").unlink()
    with caplog.at_level(logging.WARNING, logger="detkit"):
        assert resumable_checkpoint(str(run_copy)) == str(run_copy / "model_0000001.pth")
    assert "model_0000003.pth, which does not exist" in caplog.text


def test_resume_with_every_checkpoint_broken(tiny_shapes, run_copy, capsys) -> None:
    """--resume, every checkpoint broken → exit 2 naming each; nothing trained or written."""
    (run_copy / "model_0000001.pth").write_bytes(b"")
    truncate(run_copy / "model_0000003.pth")
    before = file_states(run_copy)
    status = train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy))
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "--resume finds no intact checkpoint" in line
    assert "model_0000001.pth, which is empty" in line and "model_0000003.pth, which is not" in line
    assert file_states(run_copy) == before


def test_killed_save_leaves_no_temporary_file(tiny_shapes, run_copy, monkeypatch) -> None:
    """Ctrl-C in the middle of a save → no temporary file; checkpoints and tag as they were."""
    before = file_states(run_copy)
    real_save = torch.save

    def interrupted_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        raise KeyboardInterrupt

    model = tiny_model(tiny_shapes)
    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        DetectionCheckpointer(model, str(run_copy)).save("model_0000005", iteration=5)
    monkeypatch.undo()
    assert file_states(run_copy) == before


def test_temporary_files_of_a_killed_save_are_removed(tiny_shapes, run_copy) -> None:
    """Temporary files of a SIGKILLed save → removed on resume, named in log.txt."""
    leftovers = [
        run_copy / ".model_0000005.pth.5f3a9c01d2e4.detkit-tmp",
        run_copy / ".last_checkpoint.a1b2c3d4e5f6.detkit-tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    assert train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy)) == 0
    assert not any(path.exists() for path in leftovers)
    log = (run_copy / "log.txt").read_text()
    assert "Removed 2 temporary file(s) of interrupted saves" in log
    assert ".model_0000005.pth.5f3a9c01d2e4.detkit-tmp" in log


def test_resumed_checkpointer_loads_through_resume_or_load(tiny_shapes, run_copy) -> None:
    """Checkpointer.resume_or_load, newest checkpoint empty → the previous one is loaded."""
    (run_copy / "model_0000003.pth").write_bytes(b"")
    model = tiny_model(tiny_shapes)
    extra = DetectionCheckpointer(model, str(run_copy)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    saved = torch.load(run_copy / "model_0000001.pth", weights_only=True)["model"]
    assert same_weights(model.state_dict(), saved)


@pytest.mark.parametrize(
    "content",
    ["{other}/model_0000003.pth", "../other/model_0000003.pth", b"\x80\x02\xff\xfe model"],
    ids=["absolute-path", "relative-path-out", "binary-bytes"],
)
def test_resume_with_last_checkpoint_naming_no_checkpoint_of_its_folder(
    tiny_shapes, killed, run_copy, content, capsys
) -> None:
    """--resume, last_checkpoint naming a file elsewhere or holding bytes → exit 2, one line."""
    other = shutil.copytree(killed, run_copy.parent / "other")
    tag = run_copy / "last_checkpoint"
    if isinstance(content, bytes):
        tag.write_bytes(content)
    else:
        tag.write_text(content.format(other=other))
    before, others_before = file_states(run_copy), file_states(other)
    status = train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy))
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and f"{tag}:" in line
    if isinstance(content, bytes):
        assert "not text" in line
    else:
        assert repr(content.format(other=other)) in line and "model_0000003.pth" in line
    assert file_states(run_copy) == before and file_states(other) == others_before


def test_clean_up_keeps_files_detkit_did_not_name(tiny_shapes, run_copy) -> None:
    """A user's .model_0000059.pth.keep beside a killed save's temporary file → only the latter
    removed on resume."""
    temporary = run_copy / ".model_0000005.pth.0123456789ab.detkit-tmp"
    kept = [
        run_copy / ".model_0000059.pth.keep",
        run_copy / ".model_0000005.pth.k2j4x9",
        run_copy / ".last_checkpoint.backup",
        run_copy / ".model_0000005.pth.0123456789ab.detkit-tmp.keep",
    ]
    for path in [temporary, *kept]:
        path.write_bytes(b"user data")
    assert train_net_here("--resume", *tiny_overrides(tiny_shapes, run_copy)) == 0
    assert not temporary.exists()
    assert all(path.read_bytes() == b"user data" for path in kept)


def test_resume_falls_back_to_the_newest_intact_of_three(
    tiny_shapes, straight, tmp_path, caplog
) -> None:
    """--resume, three checkpoints with the newest truncated → the middle one resumed; bit-exact."""
    run = Path(shutil.copytree(straight, tmp_path / "run"))
    (run / "model_final.pth").unlink()
    (run / "last_checkpoint").write_text("model_0000005.pth")
    assert {p.name for p in run.glob("model_*.pth")} == {f"model_{i:07d}.pth" for i in (1, 3, 5)}
    truncate(run / "model_0000005.pth")
    assert train_net_here("--resume", *tiny_overrides(tiny_shapes, run)) == 0
    log = (run / "log.txt").read_text()
    assert f"resuming from {run / 'model_0000003.pth'}, the newest intact" in log
    assert "Resuming at iteration 4" in log
    assert same_weights(final_weights(run), final_weights(straight))


class FolderHandlerWithoutIsdir(FolderHandler):
    """A handler as a minimal one is written: no ``_isdir`` of its own (iopath's base raises
    NotImplementedError), like iopath's HTTP handler."""

    PREFIX = "reliability-minimal://"
    _isdir = PathHandler._isdir


def test_weights_through_a_handler_without_isdir(tiny_shapes, killed) -> None:
    """MODEL.WEIGHTS via a registered handler lacking _isdir → loaded, same weights."""
    PathManager.register_handler(FolderHandlerWithoutIsdir(killed))
    model = tiny_model(tiny_shapes)
    DetectionCheckpointer(model).load("reliability-minimal://model_0000003.pth")
    saved = torch.load(killed / "model_0000003.pth", weights_only=True)["model"]
    assert same_weights(model.state_dict(), saved)


def test_weights_at_an_unreachable_url(tiny_shapes, tmp_path, monkeypatch, capsys) -> None:
    """MODEL.WEIGHTS=https://… that cannot be fetched → exit 2, one line naming the URL."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = "https://127.0.0.1:9/detkit-test/model_final.pth"  # a closed local port
    output = tmp_path / "out"
    status = train_net_here(*tiny_overrides(tiny_shapes, output), f"MODEL.WEIGHTS={url}")
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and f"{url}: could not be fetched" in line
    assert not list(output.glob("model_*.pth"))


def detectron2_style_pickle(model: torch.nn.Module, path: Path, protocol: int) -> Path:
    """``model``'s weights as detectron2's model zoo ships them: a pickle of numpy arrays."""
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    data = {"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_detectron2_pickle_weights(tiny_shapes, tmp_path, protocol) -> None:
    """A detectron2 model-zoo .pkl of numpy arrays (pickle protocol 2-5) → loaded, same weights."""
    trained = tiny_model(tiny_shapes)
    weights = detectron2_style_pickle(trained, tmp_path / "model.pkl", protocol)
    torch.manual_seed(1)
    model = tiny_model(tiny_shapes)
    extra = DetectionCheckpointer(model, allow_partial=False).load(str(weights))
    assert same_weights(model.state_dict(), trained.state_dict())
    assert extra["__author__"] == "Detectron2 Model Zoo"


def test_pickle_weights_that_would_run_code(tiny_shapes, tmp_path) -> None:
    """A .pkl whose unpickling would call os.system → refused naming the file; nothing run."""
    marker = tmp_path / "ran"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": RunsCommand(f"touch {marker}")}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"model\.pkl: .*posix\.system"):
        DetectionCheckpointer(tiny_model(tiny_shapes)).load(str(path))
    assert not marker.exists()


class RunsCommand:
    """Pickles as a call of ``os.system(command)``, as a crafted file would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)
