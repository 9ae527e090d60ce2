"""EventStorage and the writers: medians over a window, raw values, one JSON line per iteration
(never twice, also around the final evaluation), appending on reopen, the console line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from detkit.engine import EvalHook, IterationTimer, PeriodicWriter, TrainerBase
from detkit.utils.events import (
    ConsoleWriter,
    EventStorage,
    JSONWriter,
    TensorboardWriter,
    get_event_storage,
)


def record(storage: EventStorage, name: str, values: list[float], smoothing_hint=True) -> None:
    for iteration, value in enumerate(values):
        storage.iter = iteration
        storage.put_scalar(name, value, smoothing_hint=smoothing_hint)


def test_smoothed_scalars_are_medians_over_the_window_and_others_raw() -> None:
    storage = EventStorage()
    record(storage, "loss", [50.0, 60.0, 1.0, 2.0, 3.0])
    record(storage, "lr", [0.1, 0.2, 0.3, 0.4, 0.5], smoothing_hint=False)
    assert storage.latest_with_smoothing(3) == {"loss": (2.0, 4), "lr": (0.5, 4)}
    assert storage.latest_with_smoothing(5) == {"loss": (3.0, 4), "lr": (0.5, 4)}
    assert storage.latest_with_smoothing(2) == {"loss": (2.5, 4), "lr": (0.5, 4)}
    assert storage.latest() == {"loss": (3.0, 4), "lr": (0.5, 4)}
    assert [v for v, _ in storage.history("loss").values()] == [50.0, 60.0, 1.0, 2.0, 3.0]


def test_storage_rules() -> None:
    storage = EventStorage(start_iter=7)
    storage.put_scalar("lr", 0.1, smoothing_hint=False)
    assert storage.latest() == {"lr": (0.1, 7)}
    with pytest.raises(ValueError, match="smoothing_hint"):
        storage.put_scalar("lr", 0.2)
    with pytest.raises(KeyError, match="nothing"):
        storage.history("nothing")
    with pytest.raises(RuntimeError):
        get_event_storage()
    with EventStorage() as outer:
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_writer_groups_by_iteration_and_never_repeats_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    writer = JSONWriter(path, window=2)
    with EventStorage() as storage:
        storage.put_scalars(loss=4.0, time=1.0)
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        storage.iter = 1
        storage.put_scalars(loss=2.0, time=3.0)
        storage.put_scalar("lr", 0.2, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: nothing written
        storage.iter = 2
        storage.put_scalar("val/bbox/AP", 55.0, smoothing_hint=False)  # e.g. a final evaluation
        writer.write()
        writer.write()
    writer.close()
    # medians over the last 2 values at iteration 1: loss (4 + 2) / 2, time (1 + 3) / 2
    assert read_lines(path) == [
        {"iteration": 1, "loss": 3.0, "time": 2.0, "lr": 0.2},
        {"iteration": 2, "val/bbox/AP": 55.0},
    ]


def test_json_writer_appends_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    for iteration in (3, 9):  # a run, then the resumed run in a new writer
        writer = JSONWriter(path)
        with EventStorage(iteration) as storage:
            storage.put_scalar("loss", float(iteration))
            writer.write()
        writer.close()
    assert read_lines(path) == [{"iteration": 3, "loss": 3.0}, {"iteration": 9, "loss": 9.0}]


def test_json_writer_writes_standard_json_for_unmeasurable_values(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    writer = JSONWriter(path)
    with EventStorage(4) as storage:
        storage.put_scalars(smoothing_hint=False, APs=float("nan"), AP=51.5)
        writer.write()
    writer.close()

    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    lines = path.read_text().splitlines()
    assert [json.loads(line, parse_constant=reject) for line in lines] == [
        {"iteration": 4, "APs": None, "AP": 51.5}
    ]


class LossTrainer(TrainerBase):
    def run_step(self) -> None:
        self.storage.put_scalars(total_loss=1.0 / (self.iter + 1), loss_cls=0.5)
        self.storage.put_scalar("lr", 0.01, smoothing_hint=False)


@pytest.mark.parametrize(
    ("max_iter", "log_period", "eval_period"),
    [(30, 20, 0), (30, 10, 10), (30, 20, 15), (7, 3, 2), (6, 2, 3), (5, 1, 1)],
)
def test_metrics_lines_of_a_training_run_with_evaluation(
    tmp_path: Path, max_iter: int, log_period: int, eval_period: int
) -> None:
    """The hooks as DefaultTrainer orders them: each iteration appears at most once, the last
    training iteration has its line, and the final evaluation gets one line at max_iter."""
    path = tmp_path / "metrics.json"
    trainer = LossTrainer()
    trainer.register_hooks(
        [
            IterationTimer(),
            EvalHook(eval_period, lambda: {"val": {"bbox": {"AP": float(trainer.iter)}}}),
            PeriodicWriter([JSONWriter(path)], log_period),
        ]
    )
    trainer.train(0, max_iter)
    lines = read_lines(path)
    iterations = [line["iteration"] for line in lines]
    assert iterations == sorted(set(iterations)), f"an iteration appears twice: {iterations}"
    # lines only where a writer ran or an evaluation recorded its results
    logged = {i for i in range(max_iter) if (i + 1) % log_period == 0}
    evaluated = {i for i in range(max_iter) if eval_period and (i + 1) % eval_period == 0}
    assert set(iterations) <= logged | evaluated | {max_iter - 1, max_iter}
    assert {max_iter - 1, max_iter} <= set(iterations)
    last_step, final = lines[iterations.index(max_iter - 1)], lines[-1]
    assert {"total_loss", "loss_cls", "lr", "time"} <= set(last_step)
    assert final == {"iteration": max_iter, "val/bbox/AP": float(max_iter)}


@pytest.fixture
def engine_log() -> Iterator[list[str]]:
    """Messages of the ``detkit.engine`` logger, whatever set_up_logger did to it before."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("detkit.engine")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_console_writer_line(engine_log: list[str]) -> None:
    writer = ConsoleWriter(max_iter=10, window=3)
    with EventStorage() as storage:
        for iteration, (loss, seconds) in enumerate(
            [(9.0, 8.0), (1.0, 2.0), (2.0, 2.0), (3.0, 3.0)]
        ):
            storage.iter = iteration
            storage.put_scalars(total_loss=loss, loss_cls=loss / 2, time=seconds, data_time=0.25)
            storage.put_scalar("lr", 0.02 * (iteration + 1), smoothing_hint=False)
        writer.write()
        writer.write()  # the same iteration again: nothing
        storage.iter = 10
        storage.put_scalar("val/bbox/AP", 1.0, smoothing_hint=False)
        writer.write()  # after the last iteration (max_iter 10): nothing
    assert len(engine_log) == 1
    line = engine_log[0]
    # window 3 at iteration 3: time median(2, 2, 3) = 2 s, 10 - 3 - 1 = 6 iterations left: 12 s
    assert "eta: 0:00:12" in line
    assert "iter: 4/10" in line
    assert "total_loss: 2" in line and "loss_cls: 1" in line  # medians of (1, 2, 3), (.5, 1, 1.5)
    assert "time: 2.0000" in line
    assert "data_time: 0.2500" in line
    assert "lr: 0.08" in line  # raw, not a median
    assert "max_mem: " in line and line.rstrip().endswith("M")


def test_tensorboard_writer_writes_an_event_file(tmp_path: Path) -> None:
    writer = TensorboardWriter(tmp_path)
    with EventStorage(2) as storage:
        storage.put_scalar("loss", 1.5)
        writer.write()
    writer.close()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents.")]
