"""The evaluator protocol and the loop that runs a model over a test set and feeds evaluators."""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..structures import Instances
from ..utils import comm

logger = logging.getLogger("detkit.evaluation")


class DatasetEvaluator:
    """Accumulates a model's outputs over a dataset and turns them into metrics.

    The protocol: :meth:`reset` before the first batch, :meth:`process` once per batch and
    :meth:`evaluate` after the last. ``inputs`` are the model's input dicts (each with
    ``image_id``, ``height``, ``width``, ``file_name``); ``outputs`` are the model's outputs, one
    ``{"instances": Instances(pred_boxes=Boxes, scores, pred_classes)}`` per input, boxes as
    absolute XYXY pixels of the original image (``height`` x ``width``), classes in ``[0, K)``.

    In a distributed run every process sees its share of the images; :meth:`evaluate` gathers
    what it needs and returns ``{task: {metric: value}}`` in the main process (``{}`` or ``None``
    in the others).
    """

    def reset(self) -> None:
        """Forgets everything processed so far."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Takes the model's ``outputs`` for the batch ``inputs``."""

    def evaluate(self) -> dict | None:
        """Metrics over everything processed since the last :meth:`reset`."""
        return {}


def output_instances(evaluator: str, image: dict, output: dict) -> Instances:
    """The detections in one model ``output`` (for input ``image``), moved to the CPU; an error
    naming the evaluator and the image when the output holds none."""
    if "instances" not in output:
        raise KeyError(
            f"{evaluator}: the output for image {image.get('image_id')!r} has no 'instances' "
            f"(keys: {sorted(output)})"
        )
    return output["instances"].to("cpu")


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their results merge into one dict."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict:
        """The merged results; two evaluators reporting the same task is an error, not an
        overwrite, since one of the two results would silently be lost."""
        merged: dict = {}
        for evaluator in self._evaluators:
            for task, metrics in (evaluator.evaluate() or {}).items():
                if task in merged:
                    raise ValueError(
                        f"DatasetEvaluators: {type(evaluator).__name__} reports {task!r}, which "
                        "an earlier evaluator already reported; give each evaluator its own task"
                    )
                merged[task] = metrics
        return merged


@contextlib.contextmanager
def _inference_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode without autograd; every submodule's own mode restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _image_count(data_loader: Iterable[list[dict]]) -> int | None:
    """How many images ``data_loader`` holds, for the progress bar's total: a list's count, or
    its length for a loader of one image per batch (detkit's test loaders); else unknown."""
    if isinstance(data_loader, Sequence):
        return sum(len(batch) for batch in data_loader)
    return len(data_loader) if getattr(data_loader, "batch_size", None) == 1 else None


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
) -> dict:
    """Runs ``model`` over ``data_loader`` in eval mode and returns ``evaluator``'s results.

    ``data_loader`` yields lists of input dicts and must have a length; in a distributed run it
    holds this process's share of the images, and the evaluators gather the rest. ``evaluator``
    may be one evaluator, a list of them, or ``None`` to just run the model. The log reports the
    time per image, excluding the first few (warm-up) batches, of the model alone and of the whole
    loop (data loading and evaluator included).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    total = len(data_loader)
    logger.info(f"Start inference on {total} batches")
    num_warmup = max(min(5, total - 1), 0)
    loop_start = timed_start = time.perf_counter()
    model_seconds, timed_images = 0.0, 0
    evaluator.reset()
    bar = tqdm(
        total=_image_count(data_loader),
        desc="inference",
        unit="img",
        disable=not comm.is_main_process(),
    )
    with _inference_mode(model), bar:
        for index, inputs in enumerate(data_loader):
            if index == num_warmup:
                timed_start, model_seconds, timed_images = time.perf_counter(), 0.0, 0
            model_start = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
            model_seconds += time.perf_counter() - model_start
            timed_images += len(inputs)
            evaluator.process(inputs, outputs)
            bar.update(len(inputs))
    end = time.perf_counter()
    logger.info(
        f"Total inference time: {datetime.timedelta(seconds=round(end - loop_start))} "
        f"on {comm.get_world_size()} device(s)"
    )
    _log_per_image(end - timed_start, model_seconds, timed_images)
    results = evaluator.evaluate()
    return {} if results is None else results


def _log_per_image(loop_seconds: float, model_seconds: float, images: int) -> None:
    """Logs the per-image times of the batches after the warm-up."""
    if images == 0:
        logger.info("No images after the warm-up batches; no per-image time to report")
        return
    logger.info(
        f"Per image and device, over {images} images after warm-up: "
        f"{loop_seconds / images:.4f} s in total, {model_seconds / images:.4f} s in the model "
        f"({100 * model_seconds / max(loop_seconds, 1e-12):.0f}%)"
    )
