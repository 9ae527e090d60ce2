"""Optimizer parameter groups and the warmup + multi-step lr schedule, against hand-computed
values."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import get_default_config
from detkit.engine import LRScheduler, TrainerBase, run_train_net
from detkit.solver import (
    build_lr_scheduler,
    build_optimizer,
    fit_schedule_to_run,
    get_optimizer_params,
    warmup_multistep_schedule,
)
from detkit.utils.logger import restored_logging

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
# a model that trains 60 iterations in seconds, no evaluation
TINY_RUN = [
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=16",
    "INPUT.MIN_SIZE_TRAIN=[96]",
    "INPUT.MAX_SIZE_TRAIN=160",
    "DATALOADER.NUM_WORKERS=0",
    "DATASETS.PROPOSAL_LOADER=auto",
    "DATASETS.TEST=[]",
    "DATASETS.PROPOSAL_FILES_TEST=[]",
]

# BASE_LR 0.1, warmup from 0.01 * 0.1 = 0.001 over 10 iterations (linear: 0.001 + 0.0099 * i),
# then 0.1, x0.1 at 60 and again at 80.
EXPECTED_LR = {
    0: 0.001,
    1: 0.001 + 0.0099,
    5: 0.0505,
    9: 0.001 + 0.0099 * 9,
    10: 0.1,
    59: 0.1,
    60: 0.01,
    79: 0.01,
    80: 0.001,
    99: 0.001,
}


def solver_config(**solver):
    cfg = get_default_config()
    values = {
        "BASE_LR": 0.1,
        "MAX_ITER": 100,
        "STEPS": [60, 80],
        "GAMMA": 0.1,
        "WARMUP_ITERS": 10,
        "WARMUP_FACTOR": 0.01,
        "BIAS_LR_FACTOR": 2.0,
        "WEIGHT_DECAY": 1e-4,
        "WEIGHT_DECAY_BIAS": 3e-4,
        "WEIGHT_DECAY_NORM": 5e-4,
    }
    values.update(solver)
    for key, value in values.items():
        cfg.SOLVER[key] = value
    return cfg


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)  # the largest group: "the" lr the hook reports
        self.norm = nn.BatchNorm1d(5)
        self.frozen = nn.Linear(5, 2)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(5, 2, bias=False)
        self.tied = self.head  # shared module: its weight must appear once


def group_of(optimizer: torch.optim.Optimizer, parameter: torch.Tensor) -> dict:
    groups = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    assert len(groups) == 1
    return groups[0]


class NoStep(TrainerBase):
    def __init__(self, optimizer: torch.optim.Optimizer, bias: torch.Tensor) -> None:
        super().__init__()
        self.optimizer, self.bias = optimizer, bias
        self.bias_lrs: dict[int, float] = {}

    def run_step(self) -> None:
        self.bias_lrs[self.iter] = group_of(self.optimizer, self.bias)["lr"]
        self.optimizer.step()  # no gradients: changes nothing, but steps come in their order


def test_lr_recorded_by_the_hook_follows_warmup_and_steps() -> None:
    cfg = solver_config()
    model = Net()
    optimizer = build_optimizer(cfg, model)
    trainer = NoStep(optimizer, model.fc.bias)
    trainer.register_hooks([LRScheduler(optimizer, build_lr_scheduler(cfg, optimizer))])
    trainer.train(0, 100)
    recorded = {iteration: lr for lr, iteration in trainer.storage.history("lr").values()}
    assert sorted(recorded) == list(range(100))
    for iteration, lr in EXPECTED_LR.items():
        assert recorded[iteration] == pytest.approx(lr, rel=1e-9), iteration
        assert trainer.bias_lrs[iteration] == pytest.approx(2 * lr, rel=1e-9), iteration


def test_schedule_multiplier() -> None:
    schedule = warmup_multistep_schedule(100, [60, 80], 0.1, 10, 0.01)
    for iteration, lr in EXPECTED_LR.items():
        assert schedule(iteration / 100) == pytest.approx(lr / 0.1, rel=1e-9), iteration
    plain = warmup_multistep_schedule(100, [], 0.1, 0, 0.01)
    assert [plain(i / 100) for i in (0, 50, 99)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("steps", [[80, 60], [60, 60], [0, 60]], ids=str)
def test_bad_steps_raise_naming_the_key(steps: list[int]) -> None:
    with pytest.raises(ValueError, match=r"SOLVER\.STEPS"):
        warmup_multistep_schedule(100, steps, 0.1, 10, 0.01)
    cfg = solver_config(STEPS=steps)
    with pytest.raises(ValueError, match=r"SOLVER\.STEPS"):
        build_lr_scheduler(cfg, build_optimizer(cfg, Net()))


@pytest.mark.parametrize("steps", [[60, 100], [60, 120]], ids=str)
def test_steps_past_the_end_are_ignored_with_a_warning(steps: list[int], caplog) -> None:
    """As detectron2 does: a shortened run (only SOLVER.MAX_ITER overridden) keeps working."""
    with pytest.raises(ValueError, match=r"SOLVER\.STEPS"):  # the schedule itself stays strict
        warmup_multistep_schedule(100, steps, 0.1, 10, 0.01)
    cfg = solver_config(STEPS=steps)
    with caplog.at_level(logging.WARNING, logger="detkit.solver"):
        scheduler = build_lr_scheduler(cfg, build_optimizer(cfg, Net()))
    assert f"SOLVER.STEPS {steps[1:]} at or past SOLVER.MAX_ITER=100 are ignored" in caplog.text
    assert len(caplog.records) == 1
    reference = warmup_multistep_schedule(100, [60], 0.1, 10, 0.01)
    assert scheduler._multiplier(0.99) == pytest.approx(reference(0.99))


def test_a_warmup_over_half_the_run_is_cut_to_a_tenth_of_it() -> None:
    """A shortened run trains mostly at the full lr: 100 warm-up iterations of a 60-iteration
    run become 6 (not 59, which left the whole run warming up)."""
    assert fit_schedule_to_run(60, [3600], 100, 20) == (
        [],
        6,
        20,
        [
            "SOLVER.STEPS [3600] at or past SOLVER.MAX_ITER=60 are ignored",
            "SOLVER.WARMUP_ITERS=100 is cut to 6, a tenth of SOLVER.MAX_ITER=60",
        ],
    )
    assert fit_schedule_to_run(100, [60], 51, 20).warmup_iters == 10
    assert fit_schedule_to_run(100, [60], 50, 20) == ([60], 50, 20, [])  # half: as given
    assert fit_schedule_to_run(4, [3], 2, 2) == ([3], 2, 2, [])


def test_a_log_period_over_a_tenth_of_the_run_is_cut_but_never_below_detectron2s_20() -> None:
    assert fit_schedule_to_run(60, [], 0, 100) == (
        [],
        0,
        20,
        [
            "SOLVER.LOG_PERIOD=100 is cut to 20, to write progress during a run of "
            "SOLVER.MAX_ITER=60"
        ],
    )
    assert fit_schedule_to_run(600, [], 0, 100).log_period == 60
    assert fit_schedule_to_run(4500, [], 0, 100).log_period == 100  # the shapes run: as given
    assert fit_schedule_to_run(60, [], 0, 20).log_period == 20
    assert fit_schedule_to_run(6, [], 0, 2).log_period == 2


def test_a_run_shortened_by_max_iter_alone_logs_as_it_goes_and_warns_once(
    tiny_shapes, tmp_path: Path
) -> None:
    """The shapes config (warm-up 100, steps [3600], log period 100) with only SOLVER.MAX_ITER=60
    (and a tiny model): progress every 20 iterations, the full lr from iteration 6 on, and one
    warning naming every fitted key."""
    output = tmp_path / "run"
    argv = ["--config-file", str(SHAPES_CONFIG), *TINY_RUN, f"OUTPUT_DIR={output}"]
    argv += [f"DATASETS.TRAIN=[{tiny_shapes.name}]"]
    argv += [f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]"]
    with restored_logging():
        assert run_train_net([*argv, "SOLVER.MAX_ITER=60"]) == 0
    lines = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [19, 39, 59]
    assert [line["lr"] for line in lines] == pytest.approx([0.03] * 3)  # BASE_LR, warmed up
    warnings = [
        line for line in (output / "log.txt").read_text().splitlines() if " WARNING] " in line
    ]
    assert len(warnings) == 1
    assert (
        "SOLVER.STEPS [3600]" in warnings[0]
        and "SOLVER.WARMUP_ITERS=100 is cut to 6" in (warnings[0])
    )
    assert "SOLVER.LOG_PERIOD=100 is cut to 20" in warnings[0]


@pytest.mark.parametrize("warmup", [-1, 100, 150])
def test_bad_warmup_raises(warmup: int) -> None:
    with pytest.raises(ValueError, match=r"SOLVER\.WARMUP_ITERS"):
        warmup_multistep_schedule(100, [60], 0.1, warmup, 0.01)


def test_parameter_groups_lr_and_weight_decay() -> None:
    cfg = solver_config()
    model = Net()
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == cfg.SOLVER.MOMENTUM
    expected = {  # parameter: (lr, weight decay)
        model.fc.weight: (0.1, 1e-4),
        model.fc.bias: (0.2, 3e-4),  # BIAS_LR_FACTOR 2, WEIGHT_DECAY_BIAS
        model.norm.weight: (0.1, 5e-4),  # WEIGHT_DECAY_NORM
        model.head.weight: (0.1, 1e-4),
    }
    for parameter, (lr, decay) in expected.items():
        group = group_of(optimizer, parameter)
        assert (group["lr"], group["weight_decay"]) == pytest.approx((lr, decay))
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    # frozen parameters are left out; the shared head appears once; nothing else is there
    assert not any(p is model.frozen.weight or p is model.frozen.bias for p in grouped)
    assert len(grouped) == len({id(p) for p in grouped}) == 5  # expected + norm.bias


def test_norm_layer_bias_is_a_bias_too() -> None:
    # "Biases train at base_lr * bias_lr_factor" (get_optimizer_params' contract, and
    # detectron2's rule: its bias override applies to normalisation layers' biases as well)
    model = Net()
    groups = get_optimizer_params(model, base_lr=0.1, weight_decay=1e-4, bias_lr_factor=2.0)
    (group,) = [g for g in groups if g["params"][0] is model.norm.bias]
    assert group["lr"] == pytest.approx(0.2)


def test_scheduler_state_round_trip_restores_the_lr_mid_schedule(tmp_path: Path) -> None:
    cfg = solver_config()
    model = Net()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(65):
        optimizer.step()
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pth")

    fresh_optimizer = build_optimizer(cfg, model)
    fresh = build_lr_scheduler(cfg, fresh_optimizer)
    assert group_of(fresh_optimizer, model.fc.weight)["lr"] == pytest.approx(0.001)
    fresh.load_state_dict(torch.load(tmp_path / "scheduler.pth", weights_only=True))
    # iteration 65 lies between the steps at 60 and 80: 0.1 * 0.1
    assert group_of(fresh_optimizer, model.fc.weight)["lr"] == pytest.approx(0.01)
    assert group_of(fresh_optimizer, model.fc.bias)["lr"] == pytest.approx(0.02)
    for _ in range(15):  # to iteration 80: the second step
        fresh_optimizer.step()
        fresh.step()
    assert group_of(fresh_optimizer, model.fc.weight)["lr"] == pytest.approx(0.001)
    assert fresh.get_last_lr() == [g["lr"] for g in fresh_optimizer.param_groups]
