"""Datasets: catalogs, loaders for COCO and PASCAL VOC, the built-in registrations."""

from . import config_checks  # noqa: F401  (registers the package's config checks)
from .build import get_detection_dataset_dicts
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .config_datasets import setup_datasets
from .datasets import (
    COCO_CLASSES,
    VOC_CLASSES,
    cached_coco_records,
    datasets_root,
    load_coco_json,
    load_voc_instances,
    register_builtin_datasets,
    register_coco_instances,
    register_pascal_voc,
)
from .loaders import (
    build_detection_test_loader,
    build_detection_train_loader,
    evaluation_dataset_dicts,
    train_dataset_dicts,
)
from .mapper import DatasetMapper
from .proposal_pairing import attach_proposals
from .proposals import PROPOSAL_LOADER_REGISTRY, load_proposals
from .selective_search import compute_proposal_file, ensure_proposal_file
from .transforms import TRANSFORM_REGISTRY

register_builtin_datasets(datasets_root())

__all__ = [
    "COCO_CLASSES",
    "PROPOSAL_LOADER_REGISTRY",
    "TRANSFORM_REGISTRY",
    "VOC_CLASSES",
    "DatasetCatalog",
    "DatasetMapper",
    "Metadata",
    "MetadataCatalog",
    "attach_proposals",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "cached_coco_records",
    "compute_proposal_file",
    "ensure_proposal_file",
    "evaluation_dataset_dicts",
    "get_detection_dataset_dicts",
    "load_coco_json",
    "load_proposals",
    "load_voc_instances",
    "register_coco_instances",
    "register_pascal_voc",
    "setup_datasets",
    "train_dataset_dicts",
]
