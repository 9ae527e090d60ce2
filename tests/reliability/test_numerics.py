"""Numerics of training: no NaN from an empty batch, no update from a non-finite loss.

A batch that samples no RoI (images without objects, whose proposals the matcher all ignores)
gives finite losses: 0 for the classification and the box loss, as in detectron2. Each step
checks the total loss before the backward pass: when it is infinite or NaN the weights do not
take the step and, by default (`SOLVER.MAX_NONFINITE_STEPS: 0`), training stops with
`FloatingPointError` naming the iteration and every loss; with `SOLVER.MAX_NONFINITE_STEPS: N`
up to N such steps of the run are skipped, each logged, and the next one stops it. The count is
saved with the checkpoints, so a resumed run keeps it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from training_helpers import (
    SimulatedKillError,
    tiny_config,
    tiny_overrides,
    train_net_here,
)

from detkit.data import DatasetCatalog, MetadataCatalog, load_coco_json
from detkit.engine import DefaultTrainer, HookBase, seed_all
from detkit.utils.events import get_event_storage


@pytest.fixture(autouse=True)
def single_thread(one_thread) -> None:
    """One intra-op thread (the root conftest's ``one_thread``): tiny models run faster."""


class PoisonedTrainer(DefaultTrainer):
    """A trainer whose model's ``loss_cls`` is multiplied by ``POISON`` at the iterations in
    ``BAD``, as a diverging step would make it; it records the weights (parameters) after each
    step, and dies after ``KILL_AFTER``."""

    BAD: frozenset[int] = frozenset()
    POISON = float("nan")
    KILL_AFTER: int | None = None

    def __init__(self, cfg, run_state=None) -> None:
        super().__init__(cfg, run_state)
        self.weights_after: dict[int, dict[str, torch.Tensor]] = {}
        self.register_hooks([_RecordWeights()])

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)

        def poison(module, inputs, losses):
            if module.training and get_event_storage().iter in cls.BAD:
                return {**losses, "loss_cls": losses["loss_cls"] * cls.POISON}
            return None

        model.register_forward_hook(poison)
        return model


class _RecordWeights(HookBase):
    def after_step(self) -> None:
        trainer = self.trainer
        parameters = trainer.model.named_parameters()
        trainer.weights_after[trainer.iter] = {k: v.detach().clone() for k, v in parameters}
        if trainer.iter == trainer.KILL_AFTER:
            raise SimulatedKillError


def poisoned(bad: set[int], poison: float = float("nan"), kill_after: int | None = None):
    return type(
        "Poisoned",
        (PoisonedTrainer,),
        {"BAD": frozenset(bad), "POISON": poison, "KILL_AFTER": kill_after},
    )


def train(trainer_class, cfg) -> DefaultTrainer:
    seed_all(cfg.SEED)
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def unchanged(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


@pytest.fixture
def objectless(tiny_shapes, tmp_path: Path):
    """``tiny_shapes`` without its objects, registered as ``objectless_shapes``: every proposal
    has IoU 0 with (no) ground truth, which the matcher ignores, so no RoI is sampled."""
    data = json.loads((tiny_shapes.folder / "annotations.json").read_text())
    data["annotations"] = []
    annotations = tmp_path / "objectless.json"
    annotations.write_text(json.dumps(data))
    name = "objectless_shapes"
    DatasetCatalog.register(name, lambda: load_coco_json(annotations, tiny_shapes.folder, name))
    try:
        yield name
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_a_batch_that_samples_no_roi(tiny_shapes, objectless, tmp_path) -> None:
    """Batches that sample no RoI (objectless images) → finite losses, both 0; training goes on."""
    cfg = tiny_config(
        tiny_shapes,
        tmp_path,
        3,
        f"DATASETS.TRAIN=[{objectless}]",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS=False",
        "MODEL.ROI_HEADS.IOU_THRESHOLDS=[0.1, 0.5]",  # the paper's: IoU below 0.1 ignored
        "MODEL.ROI_HEADS.IOU_LABELS=[-1, 0, 1]",
    )
    trainer = train(DefaultTrainer, cfg)
    assert trainer.iter == 3
    for name in ("loss_cls", "loss_box_reg"):
        values = [value for value, _ in trainer.storage.history(name).values()]
        assert len(values) == 3 and values == [0.0, 0.0, 0.0], name


def test_nan_loss_stops_naming_the_iteration(tiny_shapes, tmp_path) -> None:
    """NaN loss at iteration 3 → stops naming iteration and losses, logged; no later checkpoint."""
    with pytest.raises(FloatingPointError) as error:
        train_net_here(*tiny_overrides(tiny_shapes, tmp_path), trainer_class=poisoned({3}))
    message = str(error.value)
    assert "loss became infinite or NaN at iteration 3: loss_cls=nan, loss_box_reg=" in message
    assert "SOLVER.BASE_LR" in message
    assert message in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_final.pth").exists()


def test_infinite_loss_stops_without_updating(tiny_shapes, tmp_path) -> None:
    """Infinite loss at iteration 2 → FloatingPointError naming loss_cls=inf; weights unchanged."""
    trainer_class = poisoned({2}, float("inf"))
    seed_all(7)
    trainer = trainer_class(tiny_config(tiny_shapes, tmp_path))
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"at iteration 2: loss_cls=inf"):
        trainer.train()
    assert unchanged(dict(trainer.model.named_parameters()), trainer.weights_after[1])


def test_bounded_skipping_of_non_finite_steps(tiny_shapes, tmp_path) -> None:
    """MAX_NONFINITE_STEPS=2, two NaN steps → both skipped, weights unchanged, run finishes."""
    cfg = tiny_config(tiny_shapes, tmp_path, 6, "SOLVER.MAX_NONFINITE_STEPS=2")
    trainer = train(poisoned({1, 4}), cfg)
    assert trainer.iter == 6
    weights = trainer.weights_after
    assert unchanged(weights[1], weights[0]) and unchanged(weights[4], weights[3])
    assert not unchanged(weights[2], weights[1])  # the finite steps do train
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["trainer"]["nonfinite_steps"] == 2


def test_skipped_steps_are_logged_and_the_bound_stops_the_run(tiny_shapes, tmp_path) -> None:
    """MAX_NONFINITE_STEPS=1, two NaN steps → first skipped and logged, second stops the run."""
    argv = tiny_overrides(tiny_shapes, tmp_path, 6, "SOLVER.MAX_NONFINITE_STEPS=1")
    with pytest.raises(
        FloatingPointError, match=r"iteration 4: .*after skipping 1, SOLVER\.MAX_NONFINITE_STEPS=1"
    ):
        train_net_here(*argv, trainer_class=poisoned({1, 4}))
    log = (tmp_path / "log.txt").read_text()
    assert "at iteration 1: loss_cls=nan" in log
    assert "step skipped, the weights are unchanged (1 of SOLVER.MAX_NONFINITE_STEPS=1)" in log


def test_the_skip_count_survives_a_resume(tiny_shapes, tmp_path) -> None:
    """Skipped NaN step, kill, --resume → the count is kept: the next NaN stops the run."""
    argv = tiny_overrides(tiny_shapes, tmp_path, 6, "SOLVER.MAX_NONFINITE_STEPS=1")
    with pytest.raises(SimulatedKillError):
        train_net_here(*argv, trainer_class=poisoned({1}, kill_after=3))
    checkpoint = torch.load(tmp_path / "model_0000003.pth", weights_only=True)
    assert checkpoint["trainer"]["nonfinite_steps"] == 1
    with pytest.raises(FloatingPointError, match=r"iteration 5: .*after skipping 1"):
        train_net_here("--resume", *argv, trainer_class=poisoned({5}))


def test_mixed_precision_skips_the_same_way(tiny_shapes, tmp_path) -> None:
    """Mixed precision, MAX_NONFINITE_STEPS=1, an inf step → skipped, weights unchanged."""
    cfg = tiny_config(
        tiny_shapes, tmp_path, 4, "SOLVER.AMP.ENABLED=True", "SOLVER.MAX_NONFINITE_STEPS=1"
    )
    trainer = train(poisoned({2}, float("inf")), cfg)
    assert trainer.iter == 4
    assert unchanged(trainer.weights_after[2], trainer.weights_after[1])
    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def test_a_negative_bound_is_refused(tiny_shapes, tmp_path) -> None:
    """SOLVER.MAX_NONFINITE_STEPS=-1 → refused naming the key before training."""
    cfg = tiny_config(tiny_shapes, tmp_path, 4, "SOLVER.MAX_NONFINITE_STEPS=-1")
    with pytest.raises(ValueError, match=r"SOLVER\.MAX_NONFINITE_STEPS\) must be >= 0, got -1"):
        DefaultTrainer(cfg)
