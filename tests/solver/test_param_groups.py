"""Parameter groups merged by their settings, and the optimizer state that indexes them.

The merged groups are checked against a hand-computed layout; the per-parameter groups they
replace are the reference their updates and lr schedule must equal bit for bit. Optimizer state
saved with another layout is refused when loaded, where torch would pair it with the wrong
parameters or say only that the sizes differ.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from detkit.checkpoint import DetectionCheckpointer, IncompatibleCheckpointError
from detkit.config import get_default_config
from detkit.solver import (
    build_lr_scheduler,
    build_optimizer,
    get_optimizer_params,
    reduce_param_groups,
)

LR, DECAY, BIAS_DECAY, NORM_DECAY = 0.1, 1e-4, 3e-4, 5e-4


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.fc = nn.Linear(3, 4)
        self.tied = nn.Linear(3, 4, bias=False)
        self.tied.weight = self.fc.weight  # one parameter in two modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.norm(self.conv(x)).relu().mean((2, 3))
        return self.fc(features) + self.tied(self.frozen(features))


def per_parameter_groups(model: Net) -> list[dict]:
    return get_optimizer_params(
        model,
        base_lr=LR,
        weight_decay=DECAY,
        weight_decay_norm=NORM_DECAY,
        bias_lr_factor=2.0,
        weight_decay_bias=BIAS_DECAY,
    )


def solver_config():
    cfg = get_default_config()
    solver = {"BASE_LR": LR, "WEIGHT_DECAY": DECAY, "WEIGHT_DECAY_BIAS": BIAS_DECAY}
    solver |= {"WEIGHT_DECAY_NORM": NORM_DECAY, "BIAS_LR_FACTOR": 2.0, "MOMENTUM": 0.9}
    solver |= {"MAX_ITER": 10, "STEPS": [6], "WARMUP_ITERS": 3, "WARMUP_FACTOR": 0.1}
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def layout(groups: list[dict]) -> list[tuple]:
    """Each group's settings and its parameters (by identity), in order."""
    return [
        (group["lr"], group["weight_decay"], [id(p) for p in group["params"]]) for group in groups
    ]


def test_parameters_of_equal_settings_share_a_group_in_order_of_first_appearance() -> None:
    model = Net()
    expected = [  # in model.modules() order: conv, norm, frozen (left out), fc, tied (= fc)
        (LR, DECAY, [id(model.conv.weight), id(model.fc.weight)]),
        (0.2, BIAS_DECAY, [id(model.conv.bias), id(model.norm.bias), id(model.fc.bias)]),
        (LR, NORM_DECAY, [id(model.norm.weight)]),
    ]
    assert layout(reduce_param_groups(per_parameter_groups(model))) == expected
    assert layout(build_optimizer(solver_config(), model).param_groups) == expected


def test_every_setting_takes_part_in_the_grouping() -> None:
    a, b, c, d, e = (nn.Parameter(torch.zeros(1)) for _ in range(5))
    groups = [
        {"params": [a], "lr": 1.0},
        {"params": [b], "lr": 2.0},
        {"params": [c], "lr": 1.0, "momentum": 0.5},
        {"params": [d, e], "lr": 1.0},
    ]
    merged = reduce_param_groups(groups)
    assert [{k: v for k, v in g.items() if k != "params"} for g in merged] == [
        {"lr": 1.0},
        {"lr": 2.0},
        {"lr": 1.0, "momentum": 0.5},
    ]
    assert [[id(p) for p in g["params"]] for g in merged] == [
        [id(a), id(d), id(e)],
        [id(b)],
        [id(c)],
    ]


def test_a_parameter_in_two_groups_is_refused() -> None:
    shared = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="more than one group"):
        reduce_param_groups([{"params": [shared], "lr": 1.0}, {"params": [shared], "lr": 2.0}])


def train_steps(model: Net, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(4, 2, 6, 6, generator=generator)).square().sum().backward()
        optimizer.step()


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_merged_groups_step_bitwise_like_one_group_per_parameter(foreach: bool) -> None:
    reference = Net()
    model = copy.deepcopy(reference)
    options = {"lr": LR, "momentum": 0.9, "foreach": foreach}
    per_parameter = torch.optim.SGD(per_parameter_groups(reference), **options)
    merged = torch.optim.SGD(reduce_param_groups(per_parameter_groups(model)), **options)
    assert len(merged.param_groups) == 3 < len(per_parameter.param_groups) == 6
    train_steps(reference, per_parameter)
    train_steps(model, merged)
    pairs = zip(reference.named_parameters(), model.parameters(), strict=True)
    for (name, expected), actual in pairs:
        assert torch.equal(expected, actual), name
        if expected.requires_grad:
            expected_buffer = per_parameter.state[expected]["momentum_buffer"]
            assert torch.equal(expected_buffer, merged.state[actual]["momentum_buffer"]), name
    assert not torch.equal(reference.fc.weight, Net().fc.weight)  # the steps did change them


def test_the_schedule_sets_each_merged_groups_lr_from_its_own_base_lr() -> None:
    cfg = solver_config()
    model = Net()
    merged = build_optimizer(cfg, model)
    per_parameter = torch.optim.SGD(per_parameter_groups(model), lr=LR, momentum=0.9)
    schedules = [(o, build_lr_scheduler(cfg, o)) for o in (merged, per_parameter)]
    bias_lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs = {id(p): g["lr"] for g in per_parameter.param_groups for p in g["params"]}
        assert {id(p): g["lr"] for g in merged.param_groups for p in g["params"]} == lrs
        bias_lrs.append(lrs[id(model.fc.bias)])
        for optimizer, scheduler in schedules:
            optimizer.step()  # no gradients: changes nothing, but keeps torch's order
            scheduler.step()
    # warmup from 0.1x over 3 iterations, x0.1 from iteration 6; biases at twice the base lr
    expected = [0.02, 0.08, 0.14, 0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.02]
    assert bias_lrs == pytest.approx(expected, rel=1e-9)


def saved_optimizer_state(tmp_path: Path, model: Net, groups: list[dict]) -> str:
    optimizer = torch.optim.SGD(groups, lr=LR, momentum=0.9)
    train_steps(model, optimizer, steps=1)
    DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000000")
    return str(tmp_path / "model_0000000.pth")


def test_a_checkpoint_of_the_same_layout_restores_the_momentum(tmp_path: Path) -> None:
    model = Net()
    path = saved_optimizer_state(tmp_path, model, reduce_param_groups(per_parameter_groups(model)))
    fresh = Net()
    optimizer = build_optimizer(solver_config(), fresh)
    DetectionCheckpointer(fresh, optimizer=optimizer).load(path)
    saved = torch.load(path, weights_only=True)["optimizer"]["state"]
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(saved) == len(parameters) == 6
    for index, parameter in enumerate(parameters):
        assert torch.equal(
            optimizer.state[parameter]["momentum_buffer"], saved[index]["momentum_buffer"]
        )


def test_a_checkpoint_with_one_group_per_parameter_is_refused_naming_both_layouts(
    tmp_path: Path,
) -> None:
    old = Net()
    path = saved_optimizer_state(tmp_path, old, per_parameter_groups(old))  # the earlier layout
    model = Net()
    optimizer = build_optimizer(solver_config(), model)
    # torch alone refuses too, without saying why
    with pytest.raises(ValueError, match="different number of parameter groups"):
        copy.deepcopy(optimizer).load_state_dict(torch.load(path, weights_only=True)["optimizer"])
    with pytest.raises(IncompatibleCheckpointError) as error:
        DetectionCheckpointer(model, optimizer=optimizer).load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "without --resume" in message
    assert "has 6 parameter groups (of 1, 1, 1, 1, 1, 1 parameters)" in message
    assert "this optimizer has 3 parameter groups (of 2, 3, 1 parameters)" in message
    assert not optimizer.state
    DetectionCheckpointer(model, optimizer=optimizer).load(path, checkpointables=[])  # weights
    assert torch.equal(model.fc.weight, old.fc.weight)


def test_a_reordered_layout_of_equal_sizes_is_refused_where_fvcore_loads_it(
    tmp_path: Path,
) -> None:
    first, second = nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)
    model = nn.Sequential(first, second)
    saved = torch.optim.SGD(
        [{"params": [first.weight], "lr": 0.1}, {"params": [second.weight], "lr": 0.2}],
        momentum=0.9,
    )
    model(torch.ones(1, 3)).sum().backward()
    saved.step()
    DetectionCheckpointer(model, str(tmp_path), optimizer=saved).save("model_0000000")
    path = str(tmp_path / "model_0000000.pth")

    def reordered() -> torch.optim.SGD:
        groups = [{"params": [second.weight], "lr": 0.2}, {"params": [first.weight], "lr": 0.1}]
        return torch.optim.SGD(groups, momentum=0.9)

    plain = reordered()
    Checkpointer(model, optimizer=plain).load(path)  # fvcore and torch: silently mis-paired
    assert plain.state[second.weight]["momentum_buffer"].shape == first.weight.shape

    checked = reordered()
    with pytest.raises(IncompatibleCheckpointError, match=r"\(4, 3\) would go to .* \(2, 4\)"):
        DetectionCheckpointer(model, optimizer=checked).load(path)
    assert not checked.state
