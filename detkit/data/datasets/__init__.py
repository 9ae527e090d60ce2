"""Dataset loaders: COCO JSON, PASCAL VOC folders, and the built-in registrations."""

from .builtin import COCO_CLASSES, datasets_root, register_builtin_datasets
from .coco import cached_coco_records, load_coco_json, register_coco_instances
from .pascal_voc import VOC_CLASSES, load_voc_instances, register_pascal_voc
from .shapes import SHAPE_CLASSES, ensure_shapes, register_shapes

__all__ = [
    "COCO_CLASSES",
    "SHAPE_CLASSES",
    "VOC_CLASSES",
    "cached_coco_records",
    "datasets_root",
    "ensure_shapes",
    "load_coco_json",
    "load_voc_instances",
    "register_builtin_datasets",
    "register_coco_instances",
    "register_pascal_voc",
    "register_shapes",
]
