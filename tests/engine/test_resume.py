"""Resuming is exact: k iterations, a kill, ``resume`` to 2k equals 2k iterations straight;
a resumed run keeps the seed it started with, and a checkpoint that disagrees with the run's
settled state is refused.

DefaultTrainer on the CPU trains the tiny Fast R-CNN (dropout on, so the random generator
matters) on eight shapes images; a hook raising after iteration k - 1 plays the kill, once the
checkpoint of iteration k - 1 is on disk. ``seed_all(SEED)`` before building a trainer stands
for ``default_setup`` (which seeds the process and would also reconfigure logging).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.config import ConfigError
from detkit.engine import DefaultTrainer, HookBase, seed_all
from detkit.engine.run_state import RunState, resolve_run_state

K = 3  # checkpoint period; the runs go to 2K


class SimulatedKillError(Exception):
    pass


class KillAfter(HookBase):
    """Registered after the default hooks, so the checkpoint of ``iteration`` is written."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise SimulatedKillError(f"killed after iteration {self.iteration}")


def straight_run(make_config, output: Path, *overrides: str) -> DefaultTrainer:
    cfg = make_config(
        output, f"SOLVER.MAX_ITER={2 * K}", f"SOLVER.CHECKPOINT_PERIOD={K}", *overrides
    )
    seed_all(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def momentum_buffers(trainer: DefaultTrainer) -> list[torch.Tensor]:
    return [
        trainer.optimizer.state[p]["momentum_buffer"]
        for group in trainer.optimizer.param_groups
        for p in group["params"]
    ]


def assert_same_training_state(a: DefaultTrainer, b: DefaultTrainer) -> None:
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert list(state_a) == list(state_b)
    different = [name for name in state_a if not torch.equal(state_a[name], state_b[name])]
    assert not different, f"weights differ: {different}"
    buffers_a, buffers_b = momentum_buffers(a), momentum_buffers(b)
    assert len(buffers_a) == len(buffers_b) == len(list(a.model.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(buffers_a, buffers_b, strict=True))
    lrs_a = [g["lr"] for g in a.optimizer.param_groups]
    assert lrs_a == [g["lr"] for g in b.optimizer.param_groups]
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


def killed_run(make_config, output: Path, *overrides: str) -> DefaultTrainer:
    """A run to 2K killed after iteration K - 1, once that iteration's checkpoint is saved."""
    cfg = make_config(
        output, f"SOLVER.MAX_ITER={2 * K}", f"SOLVER.CHECKPOINT_PERIOD={K}", *overrides
    )
    seed_all(cfg.SEED)
    first = DefaultTrainer(cfg)
    first.register_hooks([KillAfter(K - 1)])
    first.resume_or_load(resume=False)
    with pytest.raises(SimulatedKillError):
        first.train()
    assert (output / "last_checkpoint").read_text().strip() == f"model_{K - 1:07d}.pth"
    assert not (output / "model_final.pth").exists()
    return first


def resumed_run(make_config, output: Path, settled: bool) -> DefaultTrainer:
    """:func:`killed_run`, then a fresh trainer resuming it to 2K; its run state ``settled``
    before it is built (as train_net does) or by the trainer itself (detectron2's habit)."""
    killed_run(make_config, output)
    cfg = make_config(output, f"SOLVER.MAX_ITER={2 * K}", f"SOLVER.CHECKPOINT_PERIOD={K}")
    seed_all(cfg.SEED + 1000)  # a new process: its generators are in another state
    second = DefaultTrainer(cfg, resolve_run_state(cfg, resume=True) if settled else None)
    second.resume_or_load(resume=True)
    assert second.start_iter == second.run_state.start_iter == K
    second.train()
    assert second.iter == 2 * K
    return second


@pytest.mark.parametrize("settled", [True, False], ids=["settled-before", "settled-by-trainer"])
def test_resume_continues_exactly_like_a_straight_run(
    make_config, tmp_path: Path, settled: bool
) -> None:
    straight = straight_run(make_config, tmp_path / "straight")
    resumed = resumed_run(make_config, tmp_path / "resumed", settled)
    assert resumed.seed == straight.seed == 7
    assert_same_training_state(straight, resumed)


def test_runs_with_different_seeds_differ(make_config, tmp_path: Path) -> None:
    """The comparison above can fail: another seed gives other weights."""
    a = straight_run(make_config, tmp_path / "a")
    b = straight_run(make_config, tmp_path / "b", "SEED=8")
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert not all(torch.equal(state_a[name], state_b[name]) for name in state_a)


def test_same_seed_reproduces_a_straight_run(make_config, tmp_path: Path) -> None:
    """Two straight runs with one seed agree (the baseline the resume test relies on)."""
    assert_same_training_state(
        straight_run(make_config, tmp_path / "a"), straight_run(make_config, tmp_path / "b")
    )


def test_an_unseeded_run_resumes_with_the_seed_it_drew(make_config, tmp_path: Path) -> None:
    output = tmp_path / "unseeded"
    drawn = killed_run(make_config, output, "SEED=-1").seed
    assert drawn >= 0
    assert torch.load(output / f"model_{K - 1:07d}.pth", weights_only=True)["seed"] == drawn

    cfg = make_config(output, "SEED=-1", f"SOLVER.MAX_ITER={2 * K}")
    state = resolve_run_state(cfg, resume=True)
    assert state == RunState(drawn, K, str(output / f"model_{K - 1:07d}.pth"))
    second = DefaultTrainer(cfg, state)
    # settled before the hooks and the loader are built, in the trainer's read-only config
    assert second.seed == second.cfg.SEED == drawn and cfg.SEED == -1  # cfg itself unchanged
    second.resume_or_load(resume=True)
    assert second.start_iter == K


@pytest.mark.parametrize("seed", [12345, -1], ids=["other-seed", "drawn-seed"])
def test_a_trainer_resuming_a_checkpoint_of_another_seed_refuses_naming_both(
    make_config, tmp_path: Path, seed: int
) -> None:
    # without a run state settled before it, the trainer takes SEED or draws one (-1); resuming
    # a checkpoint of another seed would then not continue the run, so it is refused
    killed_run(make_config, tmp_path)  # seed 7
    trainer = DefaultTrainer(make_config(tmp_path, f"SEED={seed}"))
    with pytest.raises(ConfigError) as error:
        trainer.resume_or_load(resume=True)
    message = str(error.value)
    assert f"model_{K - 1:07d}.pth was trained with seed 7" in message
    assert f"this trainer's seed is {trainer.seed}" in message and "SEED=7" in message
    assert trainer.start_iter == 0 and not trainer.optimizer.state  # nothing was loaded


def test_a_checkpoint_other_than_the_settled_one_is_refused(make_config, tmp_path: Path) -> None:
    killed_run(make_config, tmp_path)
    cfg = make_config(tmp_path)
    trainer = DefaultTrainer(cfg, resolve_run_state(cfg, resume=False))  # settled: iteration 0
    with pytest.raises(ConfigError, match="settled to start at iteration 0 with seed 7"):
        trainer.resume_or_load(resume=True)
    resumed = DefaultTrainer(cfg, resolve_run_state(cfg, resume=True))  # settled: iteration K
    with pytest.raises(ConfigError, match=f"settled to start at iteration {K} from .*afresh"):
        resumed.resume_or_load(resume=False)
    assert resumed.start_iter == K and not resumed.optimizer.state  # nothing was loaded
