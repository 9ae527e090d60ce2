"""One inference path: for every config shipped under configs/, DefaultPredictor (and so
tools/demo.py) and the evaluation that --eval-only and the trainer's periodic evaluations run
(``DefaultTrainer.test``: the evaluation loader and ``inference_on_dataset``) give the same
detections on the same image and proposals. Each config keeps its own architecture and test
path (a pyramid stays a pyramid), at sizes a CPU test affords."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.data.loaders import evaluation_dataset_dicts
from detkit.data.mapper import read_image
from detkit.data.proposal_store import record_proposals
from detkit.engine import DefaultPredictor, DefaultTrainer
from detkit.engine.run_state import resolve_run_state
from detkit.evaluation import DatasetEvaluator
from detkit.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "configs"
SHIPPED = sorted(CONFIG_ROOT.rglob("*.yaml"))
# every config at small sizes: a narrow box head, 64-128 px images, on the CPU
SMALL = [
    "MODEL.DEVICE=cpu",
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "INPUT.MIN_SIZE_TEST=64",
    "INPUT.MAX_SIZE_TEST=128",
    "DATALOADER.NUM_WORKERS=0",
    "DATASETS.PROPOSAL_LOADER=auto",
]
# what else a config needs to be small: its pyramid at small scales, SVD ranks within the
# narrow head, ResNet-18 under the FPN instead of ResNet-50
SMALLER = {
    "PascalVOC/fast_rcnn_VGG16_multiscale.yaml": ["TEST.MIN_SIZES=[48, 96]"],
    "PascalVOC/fast_rcnn_VGG16_svd.yaml": ["MODEL.ROI_BOX_HEAD.SVD_RANKS=[16, 8]"],
    "COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml": ["MODEL.RESNETS.DEPTH=18"],
    "Base-FastRCNN-FPN.yaml": ["MODEL.RESNETS.DEPTH=18"],
}
IMAGES = 3  # compared per config


class Detections(DatasetEvaluator):
    """Keeps the detections of every image, by image id."""

    def reset(self) -> None:
        self.found: dict = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(inputs, outputs, strict=True):
            self.found[image["image_id"]] = output["instances"].to("cpu")


def assert_predictor_detects(predictor: DefaultPredictor, cfg, evaluated: Detections) -> None:
    """The predictor's detections on the first images of the test set of ``cfg``, given the
    proposals the evaluation loader read for them, are those of the evaluation."""
    records = evaluation_dataset_dicts(cfg, cfg.DATASETS.TEST[0])
    for index in range(IMAGES):
        record = records[index]
        boxes, _ = record_proposals(record)
        predicted = predictor(read_image(record["file_name"]), boxes)["instances"]
        expected = evaluated.found[record["image_id"]]
        assert len(expected) > 0 and predicted.image_size == expected.image_size
        assert torch.equal(predicted.pred_boxes.tensor, expected.pred_boxes.tensor)
        assert torch.equal(predicted.scores, expected.scores)
        assert torch.equal(predicted.pred_classes, expected.pred_classes)


def relative(config: Path) -> str:
    return config.relative_to(CONFIG_ROOT).as_posix()


def test_every_shipped_config_is_compared() -> None:
    assert set(SMALLER) <= {relative(config) for config in SHIPPED}
    assert "PascalVOC/fast_rcnn_VGG16_multiscale.yaml" in SMALLER


@pytest.mark.parametrize("config", SHIPPED, ids=relative)
def test_the_predictor_detects_what_the_evaluation_detects(
    config: Path, tiny_shapes, tmp_path: Path
) -> None:
    overrides = [
        *SMALL,
        *SMALLER.get(relative(config), []),
        f"DATASETS.TRAIN=[{tiny_shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny_shapes.proposal_file}]",
        f"DATASETS.TEST=[{tiny_shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
        f"OUTPUT_DIR={tmp_path}",
    ]
    shipped = load_config(config, ["DATASETS.TRAIN=[]"])
    cfg = load_config(config, overrides)
    assert bool(cfg.TEST.MIN_SIZES) == bool(shipped.TEST.MIN_SIZES)  # its own test path
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("random")
    cfg = load_config(config, [*overrides, f"MODEL.WEIGHTS={tmp_path / 'random.pth'}"])

    evaluated = Detections()
    DefaultTrainer.test(cfg, model, evaluators=[evaluated])
    assert_predictor_detects(DefaultPredictor(cfg), cfg, evaluated)


class EvaluationKept(DefaultTrainer):
    """The standard trainer whose evaluations keep their detections."""

    evaluated = Detections()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder) -> DatasetEvaluator:
        return cls.evaluated


def test_the_trainers_evaluation_runs_the_pyramid_the_predictor_runs(
    make_config, tiny_shapes, tmp_path: Path
) -> None:
    """A pyramid config trained two iterations: its final evaluation detects what the predictor
    given the checkpoint the training wrote (the model's state dict, no wrapper in it) detects."""
    overrides = [
        "TEST.MIN_SIZES=[64, 96]",
        "SOLVER.MAX_ITER=2",
        f"DATASETS.TEST=[{tiny_shapes.name}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{tiny_shapes.proposal_file}]",
    ]
    cfg = make_config(tmp_path, *overrides)
    trainer = EvaluationKept(cfg, resolve_run_state(cfg, resume=False))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.model.training  # the evaluation gave the model back in training mode
    weights = tmp_path / "model_final.pth"
    predictor = DefaultPredictor(make_config(tmp_path, *overrides, f"MODEL.WEIGHTS={weights}"))
    assert_predictor_detects(predictor, cfg, EvaluationKept.evaluated)
