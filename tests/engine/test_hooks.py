"""The standard hooks, each in a bare trainer: when they act, what they record and save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_default_config
from detkit.engine import (
    EvalHook,
    HookBase,
    IterationTimer,
    PeriodicCheckpointer,
    PeriodicWriter,
    ReseedEachIteration,
    TrainerBase,
)
from detkit.modeling import ShapeSpec
from detkit.modeling.roi_heads import build_roi_heads
from detkit.modeling.sampling import sampling_generator
from detkit.structures import Boxes, Instances
from detkit.utils.events import EventWriter


class StepTrainer(TrainerBase):
    """Draws one number from torch's generator per step; can fail at a given iteration."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.draws: dict[int, float] = {}
        self.fail_at = fail_at

    def run_step(self) -> None:
        if self.iter == self.fail_at:
            raise RuntimeError("simulated crash")
        self.draws[self.iter] = torch.rand(()).item()


def test_iteration_timer_records_one_time_per_step() -> None:
    trainer = StepTrainer()
    trainer.register_hooks([IterationTimer(warmup_iters=1)])
    trainer.train(0, 3)
    times = trainer.storage.history("time").values()
    assert [it for _, it in times] == [0, 1, 2]
    assert all(seconds >= 0 for seconds, _ in times)


def test_reseeding_makes_each_step_depend_on_the_iteration_only() -> None:
    straight = StepTrainer()
    straight.register_hooks([ReseedEachIteration(5)])
    straight.train(0, 4)
    torch.manual_seed(1234)  # a resumed process starts from some other state
    resumed = StepTrainer()
    resumed.register_hooks([ReseedEachIteration(5)])
    resumed.train(2, 4)
    assert resumed.draws == {2: straight.draws[2], 3: straight.draws[3]}
    other = StepTrainer()
    other.register_hooks([ReseedEachIteration(6)])
    other.train(0, 4)
    assert other.draws[2] != straight.draws[2]
    assert straight.draws[0] != straight.draws[1]


class SamplingTrainer(TrainerBase):
    """Samples the RoIs of one image per step as the RoI heads do, after a draw from torch's
    default generator (as dropout makes one); with ``reference``, as detkit sampled before each
    step had a sampling generator: the sampler drawing from torch's default generator."""

    def __init__(self, reference: bool = False) -> None:
        super().__init__()
        cfg = get_default_config()
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 8  # 2 of 11 foreground, 6 of 10 background
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 8
        self.heads = build_roi_heads(cfg, {"c4": ShapeSpec(channels=2, stride=16)}).train()
        self.reference = reference
        self.picks: dict[int, list] = {}

    def run_step(self) -> None:
        shifts = [*range(10), *range(30, 40)]  # IoU with the object above 0.5, then in [0.1, 0.5)
        boxes = torch.tensor([[20.0 + s, 20, 80 + s, 80] for s in shifts])
        proposals = [Instances((160, 160), proposal_boxes=Boxes(boxes))]
        targets = [
            Instances((160, 160), gt_boxes=Boxes(torch.tensor([[20.0, 20, 80, 80]])),
                      gt_classes=torch.tensor([0]))
        ]  # fmt: skip
        if self.reference:
            (labelled,) = self.heads.label_proposals(proposals, targets)
            (index,) = self.heads.sampler([labelled])  # no context: torch's default generator
            picked = labelled[index]
        else:
            torch.rand(4)
            features = {"c4": torch.zeros(1, 2, 10, 10)}
            (picked,) = self.heads.label_and_sample_proposals(proposals, targets, features)
        self.picks[self.iter] = picked.proposal_boxes.tensor.tolist()


def test_each_step_samples_with_its_own_generator_what_the_reseeded_default_one_drew() -> None:
    reference, trainer = SamplingTrainer(reference=True), SamplingTrainer()
    for each in (reference, trainer):
        each.register_hooks([ReseedEachIteration(2015)])
        each.train(0, 4)
    assert trainer.picks == reference.picks  # the draws of runs before the generator existed
    assert len({str(picks) for picks in trainer.picks.values()}) == 4
    assert sampling_generator() is None  # none is left behind for code outside training


def test_periodic_checkpointer_saves_every_period_and_final(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    trainer = StepTrainer()
    trainer.register_hooks(
        [PeriodicCheckpointer(checkpointer, 3, extra_state=lambda: {"seed": 17})]
    )
    trainer.train(0, 7)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last_checkpoint", "model_0000002.pth", "model_0000005.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    for name, iteration in [("model_0000002", 2), ("model_0000005", 5), ("model_final", 6)]:
        data = torch.load(tmp_path / f"{name}.pth", weights_only=True)
        assert data["iteration"] == iteration and data["seed"] == 17
        assert set(data["model"]) == {"weight", "bias"}


class Results:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, trainer: TrainerBase) -> dict:
        self.calls.append(trainer.iter)
        return {"val": {"bbox": {"AP": 10.0 + trainer.iter, "AP50": 50.0}}}


@pytest.mark.parametrize(
    ("period", "max_iter", "expected"),
    [(2, 5, [1, 3, 5]), (2, 6, [1, 3, 6]), (0, 4, [4]), (10, 4, [4])],
)
def test_eval_hook_evaluates_every_period_and_once_at_the_end(
    period: int, max_iter: int, expected: list[int]
) -> None:
    trainer = StepTrainer()
    results = Results()
    hook = EvalHook(period, lambda: results(trainer))
    trainer.register_hooks([hook])
    trainer.train(0, max_iter)
    # after_step of iteration i (i + 1 a multiple of period), then after_train at max_iter
    assert results.calls == expected
    ap = trainer.storage.history("val/bbox/AP").values()
    assert ap == [(10.0 + i, i) for i in expected]
    assert trainer.storage.latest()["val/bbox/AP50"] == (50.0, max_iter)
    assert hook.latest_results == {"val": {"bbox": {"AP": 10.0 + max_iter, "AP50": 50.0}}}


def test_eval_hook_skips_the_final_evaluation_of_an_interrupted_run() -> None:
    trainer = StepTrainer(fail_at=3)
    results = Results()
    trainer.register_hooks([EvalHook(2, lambda: results(trainer))])
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(0, 8)
    assert results.calls == [1]


class CountingWriter(EventWriter):
    def __init__(self) -> None:
        self.writes: list[int] = []
        self.closed = False

    def write(self) -> None:
        from detkit.utils.events import get_event_storage

        self.writes.append(get_event_storage().iter)

    def close(self) -> None:
        self.closed = True


class AssertOpenHook(HookBase):
    def __init__(self, writer: CountingWriter) -> None:
        self.writer = writer

    def after_train(self) -> None:
        assert not self.writer.closed


def test_periodic_writer_writes_each_period_the_last_step_and_at_the_end() -> None:
    writer = CountingWriter()
    trainer = StepTrainer()
    trainer.register_hooks([AssertOpenHook(writer), PeriodicWriter([writer], period=3)])
    trainer.train(0, 7)
    # after iterations 2 and 5 (every 3), 6 (the last), then after_train at iteration 7
    assert writer.writes == [2, 5, 6, 7]
    assert writer.closed


def test_validation_loss_averages_without_changing_the_model() -> None:
    from types import SimpleNamespace

    from detkit.engine.hooks import ValidationLoss
    from detkit.utils.events import EventStorage

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(1)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, batch):
            x = self.drop(self.norm(torch.tensor([[float(v)] for v in batch])))
            assert not self.norm.training and not self.drop.training  # eval inside the hook
            return {"loss_a": x.abs().sum() * 0 + sum(batch), "loss_b": torch.tensor(1.0)}

    model = Model().train()
    hook = ValidationLoss(2, lambda: [[1.0, 2.0], [3.0, 4.0]])
    with EventStorage() as storage:
        hook.trainer = SimpleNamespace(model=model, iter=0, storage=storage)
        hook.after_step()  # iteration 1 of a period of 2: nothing
        assert storage.latest() == {}
        hook.trainer.iter = 1
        hook.after_step()
        latest = {name: value for name, (value, _) in storage.latest().items()}
    assert latest == {
        "validation/loss_a": 5.0,  # (3 + 7) / 2 batches
        "validation/loss_b": 1.0,
        "validation/total_loss": 6.0,
    }
    assert model.training and model.norm.training and model.drop.training  # restored
    assert model.norm.num_batches_tracked.item() == 0  # the running statistics did not move
