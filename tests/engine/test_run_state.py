"""The run state (seed, first iteration) is settled once, from the config and the checkpoint a
resumed run continues: unit cases of ``resolve_run_state``, then ``train_net`` in this process,
killed and resumed, where ``config.yaml`` records the settled seed once and a checkpoint that
cannot be resumed (another seed, another optimizer layout) stops it with one line."""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ReadonlyConfigError
from torch import nn

from detkit.checkpoint import DetectionCheckpointer, read_training_state
from detkit.config import ConfigError, get_default_config, load_config
from detkit.engine import DefaultTrainer, HookBase, cli, default_setup, run_train_net
from detkit.engine import defaults as engine_defaults
from detkit.engine.run_state import RunState, resolve_run_state
from detkit.utils.logger import restored_logging

SHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes" / "fast_rcnn.yaml"
K = 3  # checkpoint period; the runs go to 2K


def config(output: Path, seed: int) -> DictConfig:
    cfg = get_default_config()
    cfg.OUTPUT_DIR, cfg.SEED = str(output), seed
    return cfg


def save_checkpoint(output: Path, **state) -> str:
    DetectionCheckpointer(nn.Linear(2, 1), str(output)).save("model_0000004", **state)
    return str(output / "model_0000004.pth")


def test_a_fresh_run_uses_seed_or_draws_one(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, iteration=4, seed=99)  # not resumed: ignored
    assert resolve_run_state(config(tmp_path, 5), resume=False) == RunState(5, 0, None)
    drawn = {resolve_run_state(config(tmp_path, -1), resume=False).seed for _ in range(3)}
    assert len(drawn) > 1 and min(drawn) >= 0


def test_resuming_without_a_checkpoint_is_a_fresh_start(tmp_path: Path) -> None:
    assert resolve_run_state(config(tmp_path, 5), resume=True) == RunState(5, 0, None)


@pytest.mark.parametrize("seed", [-1, 99])
def test_a_resumed_run_starts_after_the_checkpoint_with_its_seed(tmp_path: Path, seed: int) -> None:
    path = save_checkpoint(tmp_path, iteration=4, seed=99)
    assert resolve_run_state(config(tmp_path, seed), resume=True) == RunState(99, 5, path)


def test_another_explicit_seed_on_resume_is_an_error_naming_both(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, iteration=4, seed=99)
    with pytest.raises(ConfigError) as error:
        resolve_run_state(config(tmp_path, 3), resume=True)
    assert f"SEED=3 but {path}" in str(error.value) and "trained with seed 99" in str(error.value)


def test_a_checkpoint_without_a_seed_resumes_with_the_configs(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, iteration=4)
    assert resolve_run_state(config(tmp_path, 3), resume=True) == RunState(3, 5, path)


def test_the_training_state_is_read_from_a_memory_map_without_unpickling_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path, iteration=4, seed=99, note="other")
    calls, load = [], torch.load
    monkeypatch.setattr(
        torch, "load", lambda *a, **options: calls.append(options) or load(*a, **options)
    )
    assert read_training_state(path) == {"iteration": 4, "seed": 99}
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


class SimulatedKillError(Exception):
    pass


class KilledTrainer(DefaultTrainer):
    """Stops after iteration K - 1, once its checkpoint is written."""

    def __init__(self, cfg: DictConfig, run_state: RunState | None = None) -> None:
        super().__init__(cfg, run_state)
        self.register_hooks([KillAfter()])


class KillAfter(HookBase):
    def after_step(self) -> None:
        if self.trainer.iter == K - 1:
            raise SimulatedKillError


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undoes the logging set-up of ``default_setup`` (handlers, no propagation) afterwards."""
    with restored_logging():
        yield


@pytest.fixture
def train_net(tiny_shapes, tiny_model_overrides: list[str], restore_logging) -> Callable:
    """``train_net(output, *arguments, trainer_class=DefaultTrainer)``: ``run_train_net`` in
    this process on the tiny model, to 2K iterations with a checkpoint every K."""

    def run(output: Path, *arguments: str, trainer_class=DefaultTrainer) -> int:
        overrides = [
            *tiny_model_overrides,
            f"DATASETS.TRAIN=[{tiny_shapes.name}]",
            f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]",
            f"SOLVER.MAX_ITER={2 * K}",
            f"SOLVER.CHECKPOINT_PERIOD={K}",
            f"OUTPUT_DIR={output}",
        ]
        options = [a for a in arguments if a.startswith("--")]
        extra = [a for a in arguments if not a.startswith("--")]
        argv = ["--config-file", str(SHAPES_CONFIG), *options, *overrides, *extra]
        return run_train_net(argv, trainer_class=trainer_class)

    return run


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    return torch.load(output / "model_final.pth", weights_only=True)["model"]


def test_a_negative_seed_resumed_takes_the_checkpoints_and_config_yaml_records_it_once(
    train_net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "run"
    with pytest.raises(SimulatedKillError):
        train_net(output, "SEED=-1", trainer_class=KilledTrainer)
    drawn = load_config(output / "config.yaml").SEED
    assert drawn >= 0 and read_training_state(str(output / "model_0000002.pth"))["seed"] == drawn

    written: list[int] = []
    write_config = engine_defaults.write_config
    monkeypatch.setattr(
        engine_defaults,
        "write_config",
        lambda cfg, folder=None: (written.append(cfg.SEED), write_config(cfg, folder)),
    )
    assert train_net(output, "--resume", "SEED=-1") == 0
    assert written == [drawn]  # once, with the checkpoint's seed
    assert drawn == load_config(output / "config.yaml").SEED
    assert f"Resuming at iteration {K} with seed {drawn}" in (output / "log.txt").read_text()

    # and it continued exactly: as a run that never stopped, with that seed
    assert train_net(tmp_path / "straight", f"SEED={drawn}") == 0
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(output)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_default_setup_settles_the_seed_for_a_trainer_built_the_detectron2_way(
    train_net, make_config, tmp_path: Path
) -> None:
    with pytest.raises(SimulatedKillError):
        train_net(tmp_path, "SEED=-1", trainer_class=KilledTrainer)
    drawn = load_config(tmp_path / "config.yaml").SEED

    given = make_config(tmp_path, "SEED=-1", f"SOLVER.MAX_ITER={2 * K}")
    args = argparse.Namespace(resume=True, eval_only=False)
    cfg = default_setup(given, args, resolve_run_state(given, resume=args.resume))
    assert cfg.SEED == drawn == load_config(tmp_path / "config.yaml").SEED
    trainer = DefaultTrainer(cfg)  # the seed is the settled one, not a new draw
    trainer.resume_or_load(resume=True)
    assert (trainer.seed, trainer.start_iter) == (drawn, K)


def test_resuming_with_another_seed_stops_with_one_line_and_touches_nothing(
    train_net, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SimulatedKillError):
        train_net(tmp_path, trainer_class=KilledTrainer)  # SEED=7
    files = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    capsys.readouterr()

    assert train_net(tmp_path, "--resume", "SEED=12345") == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_net:")]
    assert "SEED=12345" in line and "model_0000002.pth" in line and "trained with seed 7" in line
    assert {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == files


def test_resuming_a_checkpoint_of_another_optimizer_layout_stops_with_one_line(
    train_net, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SimulatedKillError):
        train_net(tmp_path, trainer_class=KilledTrainer)
    path = tmp_path / "model_0000002.pth"
    checkpoint = torch.load(path, weights_only=True)
    groups = checkpoint["optimizer"]["param_groups"]  # as written before groups were merged:
    per_parameter = [{**g, "params": [i]} for g in groups for i in g["params"]]  # one each
    checkpoint["optimizer"]["param_groups"] = per_parameter
    torch.save(checkpoint, path)
    capsys.readouterr()

    assert train_net(tmp_path, "--resume") == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_net:")]
    assert f"{path}: its optimizer state has {len(per_parameter)} parameter groups" in line
    assert f"this optimizer has {len(groups)} parameter groups" in line


def count_reads(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, int]:
    """How often the checkpoint ``path`` has its records' checksums verified (a read of the
    whole file), is loaded in full, and has only its index read (a memory-mapped load)."""
    reads = {"checksums": 0, "loads": 0, "index": 0}
    testzip, load = zipfile.ZipFile.testzip, torch.load

    def counting_testzip(archive: zipfile.ZipFile):
        reads["checksums"] += Path(archive.filename) == path
        return testzip(archive)

    def counting_load(file, *args, **options):
        if isinstance(file, str | Path) and Path(file) == path:
            reads["index" if options.get("mmap") else "loads"] += 1
        return load(file, *args, **options)

    monkeypatch.setattr(zipfile.ZipFile, "testzip", counting_testzip)
    monkeypatch.setattr(torch, "load", counting_load)
    return reads


class RecordingTrainer(DefaultTrainer):
    """Records the config and the run state it was given, and its own config."""

    built: ClassVar[list[tuple[DictConfig, RunState | None, DictConfig]]] = []

    def __init__(self, cfg: DictConfig, run_state: RunState | None = None) -> None:
        super().__init__(cfg, run_state)
        RecordingTrainer.built.append((cfg, run_state, self.cfg))


def test_resume_reads_the_checkpoint_once_and_trains_on_a_read_only_config(
    train_net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SimulatedKillError):
        train_net(tmp_path, "SEED=-1", trainer_class=KilledTrainer)
    drawn = load_config(tmp_path / "config.yaml").SEED
    reads = count_reads(monkeypatch, tmp_path / f"model_{K - 1:07d}.pth")
    RecordingTrainer.built.clear()
    assert train_net(tmp_path, "--resume", "SEED=-1", trainer_class=RecordingTrainer) == 0
    # the run state and the load share one read: checksummed once, loaded once, nothing else
    assert reads == {"checksums": 1, "loads": 1, "index": 0}
    assert f"Resuming at iteration {K} with seed {drawn}" in (tmp_path / "log.txt").read_text()

    ((given, state, used),) = RecordingTrainer.built
    assert state.start_iter == K and state.seed == drawn  # resolved in train_net, passed on
    assert used == given and OmegaConf.is_readonly(used) and drawn == used.SEED
    with pytest.raises(ReadonlyConfigError):
        used.SOLVER.BASE_LR = 1.0


def test_set_up_takes_the_run_state_and_returns_a_read_only_config(
    make_config, tmp_path: Path, restore_logging
) -> None:
    given = make_config(tmp_path, "SEED=-1")
    with pytest.raises(TypeError, match="run_state"):
        default_setup(given, None)  # resolved once before set-up, not by it
    state = resolve_run_state(given, resume=False)
    cfg = default_setup(given, None, state)
    assert cfg.SEED == state.seed == load_config(tmp_path / "config.yaml").SEED >= 0
    assert given.SEED == -1 and not OmegaConf.is_readonly(given)  # the given config unchanged
    with pytest.raises(ReadonlyConfigError):
        cfg.SOLVER.BASE_LR = 1.0
    with pytest.raises(ReadonlyConfigError):
        cfg.DATASETS.TRAIN.append("other")


def test_a_trainer_built_the_detectron2_way_has_a_read_only_config_with_its_seed(
    make_config, tmp_path: Path
) -> None:
    given = make_config(tmp_path, "SEED=-1")
    trainer = DefaultTrainer(given)  # resolves a fresh start itself
    assert trainer.run_state == RunState(trainer.seed) and trainer.seed >= 0
    assert trainer.seed == trainer.cfg.SEED and OmegaConf.is_readonly(trainer.cfg)
    assert given.SEED == -1 and not OmegaConf.is_readonly(given)
    with pytest.raises(ReadonlyConfigError):
        trainer.cfg.SOLVER.MAX_ITER = 1


@pytest.mark.parametrize("seed", [7, 12345], ids=["its-seed", "another-seed"])
def test_several_processes_resuming_are_checked_from_the_checkpoint_index_before_they_start(
    train_net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, seed: int
) -> None:
    with pytest.raises(SimulatedKillError):
        train_net(tmp_path, trainer_class=KilledTrainer)  # SEED=7
    reads = count_reads(monkeypatch, tmp_path / f"model_{K - 1:07d}.pth")
    started: list[tuple] = []
    monkeypatch.setattr(cli, "launch", lambda *args, **options: started.append(args))
    capsys.readouterr()
    status = train_net(tmp_path, "--resume", "--num-gpus=2", f"SEED={seed}")
    # the launcher reads the index only; each process reads the file once when it starts
    assert reads == {"checksums": 0, "loads": 0, "index": 1}
    if seed == 7:
        assert status == 0 and len(started) == 1
        return
    assert status == 2 and not started
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_net:")]
    assert "SEED=12345" in line and "model_0000002.pth" in line and "trained with seed 7" in line
