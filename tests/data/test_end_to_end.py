"""Shapes images + selective-search proposals → loaders → a Fast R-CNN training and test step."""

from __future__ import annotations

from pathlib import Path

import torch

from detkit.config import load_config
from detkit.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detkit.data.datasets.coco import load_coco_json
from detkit.data.datasets.shapes import ensure_shapes
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]


def test_loaded_batches_train_and_evaluate_the_model(tmp_path: Path) -> None:
    folder = ensure_shapes(tmp_path, "val", num_images=4, seed=21)
    DatasetCatalog.register("tiny_e2e", lambda: load_coco_json(folder / "annotations.json", folder))
    try:
        proposals = tmp_path / "ss.pkl"  # computed on first use by the selective_search loader
        cfg = load_config(
            REPO / "configs" / "Base-FastRCNN.yaml",
            [
                "DATASETS.TRAIN=[tiny_e2e]",
                f"DATASETS.PROPOSAL_FILES_TRAIN=[{proposals}]",
                "DATASETS.TEST=[tiny_e2e]",
                f"DATASETS.PROPOSAL_FILES_TEST=[{proposals}]",
                "INPUT.MIN_SIZE_TRAIN=[128, 160]",
                "INPUT.MIN_SIZE_TEST=160",
                "MODEL.BACKBONE.NAME=ResNet",
                "MODEL.RESNETS.DEPTH=18",
                "MODEL.ROI_HEADS.NUM_CLASSES=3",
                "MODEL.ROI_BOX_HEAD.FC_DIM=32",
                "DATALOADER.NUM_WORKERS=0",
                "DATASETS.PROPOSAL_LOADER=selective_search",
                "SEED=1",
            ],
        )
        model = build_model(cfg).train()
        batch = next(iter(build_detection_train_loader(cfg)))
        assert proposals.is_file()
        assert len(batch) == 2 and all(len(item["proposals"]) > 0 for item in batch)
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()

        model.eval()
        (item,) = next(iter(build_detection_test_loader(cfg, "tiny_e2e")))
        with torch.no_grad():
            (output,) = model([item])
        assert output["instances"].image_size == (item["height"], item["width"])
    finally:
        DatasetCatalog.remove("tiny_e2e")
