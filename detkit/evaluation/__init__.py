"""Evaluation: the evaluator protocol, the inference loop, COCO and PASCAL VOC box AP."""

from .coco_evaluation import COCOEvaluator, convert_to_coco_dict
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .pascal_voc_evaluation import PascalVOCDetectionEvaluator
from .testing import format_results_table

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "PascalVOCDetectionEvaluator",
    "convert_to_coco_dict",
    "format_results_table",
    "inference_on_dataset",
]
