"""Datasets: catalogs, loaders for COCO and PASCAL VOC, the built-in registrations."""

from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .datasets import (
    VOC_CLASSES,
    datasets_root,
    load_coco_json,
    load_voc_instances,
    register_builtin_datasets,
    register_coco_instances,
    register_pascal_voc,
)

register_builtin_datasets(datasets_root())

__all__ = [
    "VOC_CLASSES",
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "load_coco_json",
    "load_voc_instances",
    "register_coco_instances",
    "register_pascal_voc",
]
