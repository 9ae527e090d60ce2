"""Resuming is exact: k iterations, a kill, ``resume`` to 2k equals 2k iterations straight.

DefaultTrainer on the CPU trains the tiny Fast R-CNN (dropout on, so the random generator
matters) on eight shapes images; a hook raising after iteration k - 1 plays the kill, once the
checkpoint of iteration k - 1 is on disk. ``seed_all(SEED)`` before building a trainer stands
for ``default_setup`` (which seeds the process and would also reconfigure logging).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.engine import DefaultTrainer, HookBase, seed_all

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


def resumed_run(make_config, output: Path, *overrides: str) -> DefaultTrainer:
    """A run to 2K killed after iteration K - 1, then a fresh trainer resuming it to 2K."""
    common = [f"SOLVER.MAX_ITER={2 * K}", f"SOLVER.CHECKPOINT_PERIOD={K}"]
    cfg = make_config(output, *common)
    seed_all(cfg.SEED)
    first = DefaultTrainer(cfg)
    first.register_hooks([KillAfter(K - 1)])
    first.resume_or_load(resume=False)
    with pytest.raises(SimulatedKillError):
        first.train()
    assert (output / "last_checkpoint").read_text().strip() == f"model_{K - 1:07d}.pth"
    assert not (output / "model_final.pth").exists()

    cfg = make_config(output, *common, *overrides)
    seed_all(cfg.SEED + 1000)  # a new process: its generators are in another state
    second = DefaultTrainer(cfg)
    second.resume_or_load(resume=True)
    assert second.start_iter == K
    second.train()
    assert second.iter == 2 * K
    return second


@pytest.mark.parametrize("resume_seed", [None, 12345], ids=["same-seed", "other-seed"])
def test_resume_continues_exactly_like_a_straight_run(
    make_config, tmp_path: Path, resume_seed: int | None
) -> None:
    # other-seed: the resumed process was started with another SEED (e.g. SEED=-1 resolved to
    # a random one); the run's seed comes back from the checkpoint
    overrides = [] if resume_seed is None else [f"SEED={resume_seed}"]
    straight = straight_run(make_config, tmp_path / "straight")
    resumed = resumed_run(make_config, tmp_path / "resumed", *overrides)
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
    settings = ["SEED=-1", f"SOLVER.MAX_ITER={2 * K}", f"SOLVER.CHECKPOINT_PERIOD={K}"]
    first = DefaultTrainer(make_config(output, *settings))
    first.register_hooks([KillAfter(K - 1)])
    first.resume_or_load(resume=False)
    with pytest.raises(SimulatedKillError):
        first.train()
    drawn = first.seed
    assert drawn >= 0
    assert torch.load(output / f"model_{K - 1:07d}.pth", weights_only=True)["seed"] == drawn

    second = DefaultTrainer(make_config(output, *settings))  # draws a seed of its own
    second.resume_or_load(resume=True)
    assert second.seed == second.cfg.SEED == drawn
    assert drawn == load_config(output / "config.yaml").SEED  # the record follows the run
