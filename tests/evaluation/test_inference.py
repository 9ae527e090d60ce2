"""inference_on_dataset and DatasetEvaluators, with a fake model and recording evaluators."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing as mp
from torch import nn

from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    PascalVOCDetectionEvaluator,
    inference_on_dataset,
)
from detkit.structures import Boxes, Instances


class Recorder(DatasetEvaluator):
    """Writes every call into a shared log, and reports ``{task: {"n": images processed}}``."""

    def __init__(self, calls: list, task: str = "fake") -> None:
        self.calls, self.task, self.images = calls, task, 0

    def reset(self) -> None:
        self.calls.append(("reset", self.task))
        self.images = 0

    def process(self, inputs, outputs) -> None:
        self.calls.append(("process", self.task, [x["image_id"] for x in inputs], outputs))
        self.images += len(inputs)

    def evaluate(self) -> dict:
        self.calls.append(("evaluate", self.task))
        return {self.task: {"n": self.images}}


class EchoModel(nn.Module):
    """Returns its inputs' ``image_id``s and notes the mode it was called in."""

    def __init__(self, fail_at: object = None) -> None:
        super().__init__()
        self.head = nn.Linear(1, 1)
        self.fail_at = fail_at
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, inputs: list[dict]) -> list[dict]:
        self.seen.append((self.training, torch.is_grad_enabled()))
        if any(x["image_id"] == self.fail_at for x in inputs):
            raise RuntimeError("boom")
        return [{"echo": x["image_id"]} for x in inputs]


def batches(count: int, per_batch: int = 1) -> list[list[dict]]:
    ids = iter(range(count * per_batch))
    return [[{"image_id": next(ids)} for _ in range(per_batch)] for _ in range(count)]


def test_runs_in_eval_mode_without_grad_and_calls_the_hooks_in_order(caplog) -> None:
    model = EchoModel()
    model.train()
    model.head.eval()  # a mixed state must come back as it was, not as all-train
    calls: list = []
    with caplog.at_level(logging.INFO, logger="detkit.evaluation"):
        results = inference_on_dataset(model, batches(8, per_batch=2), Recorder(calls))
    assert results == {"fake": {"n": 16}}
    assert [c[0] for c in calls] == ["reset", *["process"] * 8, "evaluate"]
    assert calls[1][2:] == ([0, 1], [{"echo": 0}, {"echo": 1}])
    assert model.seen == [(False, False)] * 8
    assert model.training and not model.head.training
    assert "Total inference time" in caplog.text
    assert "over 6 images after warm-up" in caplog.text  # 5 warm-up batches of 2 left out


def test_the_progress_bar_says_what_it_counts_in_images(capsys) -> None:
    inference_on_dataset(EchoModel(), batches(3, per_batch=2), None)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("inference: 100%") and "6/6 " in bar and "img/s" in bar, bar
    assert "it/s" not in bar


def test_restores_the_mode_when_the_model_fails() -> None:
    model = EchoModel(fail_at=2)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, batches(4), None)
    assert model.training and model.head.training


def test_evaluator_may_be_none_or_a_list() -> None:
    model = EchoModel()
    assert inference_on_dataset(model, batches(3), None) == {}
    assert len(model.seen) == 3
    calls: list = []
    results = inference_on_dataset(model, batches(3), [Recorder(calls, "a"), Recorder(calls, "b")])
    assert results == {"a": {"n": 3}, "b": {"n": 3}}
    assert inference_on_dataset(model, [], Recorder([])) == {"fake": {"n": 0}}


def test_dataset_evaluators_merge_and_reject_duplicate_tasks() -> None:
    calls: list = []
    both = DatasetEvaluators([Recorder(calls, "a"), Recorder(calls, "b")])
    both.reset()
    both.process([{"image_id": 1}], [{}])
    assert both.evaluate() == {"a": {"n": 1}, "b": {"n": 1}}
    assert [c[:2] for c in calls] == [
        ("reset", "a"), ("reset", "b"), ("process", "a"), ("process", "b"),
        ("evaluate", "a"), ("evaluate", "b"),
    ]  # fmt: skip
    clash = DatasetEvaluators([Recorder(calls, "bbox"), Recorder(calls, "bbox")])
    with pytest.raises(ValueError, match="'bbox'"):
        clash.evaluate()


class Oracle(nn.Module):
    """Answers each image with its ground truth, as a detector that is always right."""

    def __init__(self, dicts: list[dict]) -> None:
        super().__init__()
        self.truth = {d["image_id"]: d["annotations"] for d in dicts}

    def forward(self, inputs: list[dict]) -> list[dict]:
        outputs = []
        for x in inputs:
            annotations = self.truth[x["image_id"]]
            boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32)
            instances = Instances(
                (x["height"], x["width"]),
                pred_boxes=Boxes(boxes),
                scores=torch.ones(len(annotations)),
                pred_classes=torch.tensor([a["category_id"] for a in annotations]),
            )
            outputs.append({"instances": instances})
        return outputs


def _dicts() -> list[dict]:
    return [
        {
            "file_name": f"{i}.jpg",
            "image_id": i,
            "height": 100,
            "width": 100,
            "annotations": [{"bbox": [i, 2 * i, i + 40, 2 * i + 50], "category_id": i % 2}],
        }
        for i in range(1, 7)
    ]


def _sharded_worker(rank: int, world_size: int, folder: str) -> None:
    """One of ``world_size`` processes, each running over every ``world_size``-th image."""
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        name = f"test_sharded_{uuid.uuid4().hex}"  # catalogs are per process
        DatasetCatalog.register(name, _dicts)
        MetadataCatalog.get(name).set(thing_classes=["even", "odd"])
        shard = [[d] for d in _dicts()[rank::world_size]]
        model = Oracle(_dicts())
        results = {
            "coco": inference_on_dataset(model, shard, COCOEvaluator(name)),
            "voc": inference_on_dataset(model, shard, PascalVOCDetectionEvaluator(name)),
        }
        Path(folder, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_sharded_across_processes_the_main_process_gets_everything(tmp_path) -> None:
    # fork: the children need not import torch and detkit again (that takes seconds)
    mp.start_processes(_sharded_worker, args=(2, str(tmp_path)), nprocs=2, start_method="fork")
    # each process saw 3 of the 6 images: 100 only if rank 0 evaluated both halves
    main = json.loads((tmp_path / "rank0.json").read_text())
    assert main["coco"]["bbox"]["AP"] == pytest.approx(100.0)
    assert main["voc"]["bbox"]["AP"] == pytest.approx(100.0)
    assert json.loads((tmp_path / "rank1.json").read_text()) == {"coco": {}, "voc": {}}
