"""Evaluation: the evaluator protocol, the inference loop, COCO and PASCAL VOC box AP."""

from . import config_checks  # noqa: F401  (registers the package's config checks)
from .build import EVALUATOR_REGISTRY, build_evaluator, evaluator_names
from .coco_evaluation import COCOEvaluator, convert_to_coco_dict
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .pascal_voc_evaluation import PascalVOCDetectionEvaluator
from .testing import format_results_table

__all__ = [
    "EVALUATOR_REGISTRY",
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "PascalVOCDetectionEvaluator",
    "build_evaluator",
    "convert_to_coco_dict",
    "evaluator_names",
    "format_results_table",
    "inference_on_dataset",
]
