"""The evaluator registry: ``TEST.EVALUATORS`` (or a dataset's ``evaluator_type`` metadata) names
its entries, built per test set by :func:`build_evaluator`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..config import ConfigError
from ..data import MetadataCatalog
from ..utils.registry import Registry
from .coco_evaluation import COCOEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators
from .pascal_voc_evaluation import PascalVOCDetectionEvaluator

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """Dataset evaluators, named by ``TEST.EVALUATORS``: a
:class:`DatasetEvaluator` class with ``from_config(cfg, dataset_name, output_folder)``, or a
builder ``f(cfg, dataset_name, output_folder) -> DatasetEvaluator``."""


def _coco(cfg: DictConfig, dataset_name: str, output_folder: str | Path) -> DatasetEvaluator:
    """COCO box AP (``TEST.COCO_EVAL_BACKEND``); writes ``coco_instances_results.json`` to the
    folder."""
    return COCOEvaluator(dataset_name, output_folder, backend=cfg.TEST.COCO_EVAL_BACKEND)


def _pascal_voc(cfg: DictConfig, dataset_name: str, output_folder: str | Path) -> DatasetEvaluator:
    """PASCAL VOC box AP (the devkit's); its task is ``bbox_voc`` when COCO's runs beside it."""
    task = "bbox_voc" if "coco" in cfg.TEST.EVALUATORS else "bbox"
    return PascalVOCDetectionEvaluator(dataset_name, task=task)


EVALUATOR_REGISTRY.register(_coco, name="coco")
EVALUATOR_REGISTRY.register(_pascal_voc, name="pascal_voc")


def evaluator_names(cfg: DictConfig, dataset_name: str) -> list[str]:
    """``TEST.EVALUATORS``, or when empty the dataset's ``evaluator_type`` metadata."""
    names = list(cfg.TEST.EVALUATORS)
    if names:
        return names
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type is None:
        raise ConfigError(
            f"dataset {dataset_name!r} has no evaluator_type metadata; name its evaluators in "
            "TEST.EVALUATORS"
        )
    return [evaluator_type]


def build_evaluator(
    cfg: DictConfig, dataset_name: str, output_folder: str | Path
) -> DatasetEvaluator:
    """The evaluators of ``dataset_name`` (:func:`evaluator_names`), run together; an unknown
    name is an error naming the registered ones."""
    evaluators = []
    for name in evaluator_names(cfg, dataset_name):
        if name not in EVALUATOR_REGISTRY:
            raise ConfigError(
                f"TEST.EVALUATORS / evaluator_type of {dataset_name!r}: "
                f"{EVALUATOR_REGISTRY.unknown_name_message(name)}"
            )
        evaluators.append(EVALUATOR_REGISTRY.build(name, cfg, dataset_name, output_folder))
    return DatasetEvaluators(evaluators)
