"""TrainerBase's hook protocol, SimpleTrainer's update and its guards, AMPTrainer on the CPU.

Expected orders and weights are written out by hand (SGD on a linear loss has a gradient one can
read off the input), never taken from the trainer under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkit.config import get_default_config
from detkit.engine import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from detkit.solver import build_gradient_clipper


class RecordingHook(HookBase):
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def before_train(self) -> None:
        self.log.append((self.name, "before_train", self.trainer.iter))

    def before_step(self) -> None:
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_step(self) -> None:
        self.log.append((self.name, "after_step", self.trainer.iter))

    def after_train(self) -> None:
        self.log.append((self.name, "after_train", self.trainer.iter))


class RecordingTrainer(TrainerBase):
    def __init__(self, log: list, fail_at: int | None = None) -> None:
        super().__init__()
        self.log, self.fail_at = log, fail_at

    def run_step(self) -> None:
        if self.iter == self.fail_at:
            raise RuntimeError(f"step {self.iter} failed")
        self.log.append(("trainer", "run_step", self.iter))
        self.storage.put_scalar("step", self.iter)


def expected_log(start: int, stop: int, last_iter: int) -> list:
    log = [("a", "before_train", start), ("b", "before_train", start)]
    for i in range(start, stop):
        log += [("a", "before_step", i), ("b", "before_step", i), ("trainer", "run_step", i)]
        log += [("a", "after_step", i), ("b", "after_step", i)]
    return [*log, ("a", "after_train", last_iter), ("b", "after_train", last_iter)]


def test_hooks_run_in_registration_order_around_each_step() -> None:
    log: list = []
    trainer = RecordingTrainer(log)
    trainer.register_hooks([RecordingHook("a", log), None, RecordingHook("b", log)])
    trainer.train(2, 5)
    assert log == expected_log(2, 5, last_iter=5)
    assert trainer.iter == trainer.max_iter == 5
    # the storage records each step at the iteration being run
    assert [it for _, it in trainer.storage.history("step").values()] == [2, 3, 4]


def test_after_train_runs_and_the_error_propagates_when_a_step_fails() -> None:
    log: list = []
    trainer = RecordingTrainer(log, fail_at=3)
    trainer.register_hooks([RecordingHook("a", log), RecordingHook("b", log)])
    with pytest.raises(RuntimeError, match="step 3 failed"):
        trainer.train(0, 6)
    expected = expected_log(0, 3, last_iter=3)[:-2]
    expected += [("a", "before_step", 3), ("b", "before_step", 3)]
    expected += [("a", "after_train", 3), ("b", "after_train", 3)]
    assert log == expected
    assert trainer.iter == 3 < trainer.max_iter  # interrupted: hooks can tell


def test_after_train_sees_max_iter_when_nothing_is_left_to_train() -> None:
    # resuming a finished run (start_iter == max_iter) is a finished run too
    log: list = []
    trainer = RecordingTrainer(log)
    trainer.register_hooks([RecordingHook("a", log), RecordingHook("b", log)])
    trainer.train(4, 4)
    assert log == expected_log(4, 4, last_iter=4)
    assert trainer.iter == 4


class LinearLosses(nn.Module):
    """``loss_a = w . x`` (gradient ``x``) and ``loss_b = scale * sum(w)``; float64 so that the
    hand-computed updates are exact to the last digits."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, batch: tuple[list[float], float]) -> dict[str, torch.Tensor]:
        x, scale = batch
        x = torch.tensor(x, dtype=torch.float64)
        return {"loss_a": (self.w * x).sum(), "loss_b": scale * self.w.sum()}


@pytest.mark.parametrize(("scale", "shown"), [(float("inf"), "inf"), (float("nan"), "nan")])
def test_non_finite_loss_raises_naming_iteration_and_losses_without_update(
    scale: float, shown: str
) -> None:
    model = LinearLosses([1.0, 2.0])
    batches = [([0.5, 0.25], 0.0), ([0.5, 0.25], scale)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = SimpleTrainer(model, batches, optimizer)
    with pytest.raises(FloatingPointError) as error:
        trainer.train(0, 2)
    # step 0: gradient x = [0.5, 0.25], w = [1, 2] - 0.1 * x; the bad step 1 changes nothing
    assert torch.equal(model.w.detach(), torch.tensor([0.95, 1.975], dtype=torch.float64))
    message = str(error.value)
    assert "iteration 1" in message
    # loss_a at step 1 = 0.95 * 0.5 + 1.975 * 0.25 = 0.96875
    assert "loss_a=0.96875" in message
    assert f"loss_b={shown}" in message
    # the momentum buffer is still the one of step 0 (= its gradient)
    buffer = optimizer.state[model.w]["momentum_buffer"]
    assert torch.equal(buffer, torch.tensor([0.5, 0.25], dtype=torch.float64))


def test_simple_trainer_records_losses_and_data_time() -> None:
    model = LinearLosses([1.0, 2.0])
    trainer = SimpleTrainer(
        model, [([0.5, 0.25], 1.0)], torch.optim.SGD(model.parameters(), lr=0.0)
    )
    trainer.train(0, 1)
    latest = trainer.storage.latest()
    # loss_a = 0.5 + 0.5 = 1, loss_b = 1 * (1 + 2) = 3
    assert latest["loss_a"] == (1.0, 0) and latest["loss_b"] == (3.0, 0)
    assert latest["total_loss"] == (4.0, 0)
    assert latest["data_time"][0] >= 0


def clip_config(clip_type: str, value: float):
    cfg = get_default_config()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    return cfg


@pytest.mark.parametrize(
    ("clip_type", "value", "clipped"),
    [
        ("norm", 1.0, [0.6, 0.8]),  # gradient [30, 40] has norm 50: scaled by 1/50
        ("norm", 100.0, [30.0, 40.0]),  # within the bound: untouched
        ("value", 35.0, [30.0, 35.0]),  # each entry clamped to [-35, 35]
    ],
)
def test_gradient_clipping_bounds_the_update(clip_type: str, value: float, clipped: list) -> None:
    model = LinearLosses([1.0, 2.0])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipper = build_gradient_clipper(clip_config(clip_type, value))
    trainer = SimpleTrainer(model, [([30.0, 40.0], 0.0)], optimizer, clipper)
    trainer.train(0, 1)
    expected = torch.tensor(clipped, dtype=torch.float64)
    torch.testing.assert_close(model.w.grad, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        model.w.detach(),
        torch.tensor([1.0, 2.0], dtype=torch.float64) - expected,
        rtol=1e-6,
        atol=0,
    )
    if clip_type == "norm":
        assert model.w.grad.norm() <= value * (1 + 1e-6)


def test_gradient_clipper_off_or_unknown() -> None:
    assert build_gradient_clipper(get_default_config()) is None  # disabled by default
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_gradient_clipper(clip_config("max", 1.0))


class TinyLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.output_dtypes: list[torch.dtype] = []

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.linear(batch)
        self.output_dtypes.append(out.dtype)
        return {"loss": out.float().sum()}


def test_amp_trainer_runs_a_bfloat16_step_on_the_cpu() -> None:
    torch.manual_seed(0)
    model = TinyLinear()
    x = torch.randn(3, 4)
    before = model.linear.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = AMPTrainer(model, [x], optimizer, device_type="cpu")
    assert trainer.dtype == torch.bfloat16
    trainer.train(0, 1)
    assert model.output_dtypes == [torch.bfloat16]  # the forward pass ran under autocast
    assert model.linear.weight.dtype == torch.float32  # master weights stay float32
    # d(sum of outputs)/dW = each row gets the column sums of x; bf16 rounds the inputs
    expected = before - 0.1 * x.sum(dim=0).expand(2, 4)
    torch.testing.assert_close(model.linear.weight.detach(), expected, rtol=0.02, atol=0.02)
    assert trainer.storage.latest()["loss"][1] == 0
    assert not trainer.grad_scaler.is_enabled()  # bfloat16 needs no loss scaling
    trainer.load_state_dict(trainer.state_dict())
