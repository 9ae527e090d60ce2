"""DefaultPredictor against a hand-prepared run of the same model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, load_config
from detkit.data.selective_search import selective_search_boxes
from detkit.engine import DefaultPredictor
from detkit.modeling import build_model
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "MODEL.BACKBONE.NAME=ResNet",
    "MODEL.RESNETS.DEPTH=18",
    "MODEL.ROI_HEADS.NUM_CLASSES=3",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "INPUT.MIN_SIZE_TEST=128",
    "INPUT.MAX_SIZE_TEST=256",
]


def tiny_config(*overrides: str):
    return load_config(REPO / "configs" / "Base-FastRCNN.yaml", [*TINY, *overrides])


def saved_model(tmp_path: Path, *overrides: str):
    """A tiny model in eval mode and its config with MODEL.WEIGHTS pointing at its checkpoint."""
    torch.manual_seed(0)
    model = build_model(tiny_config(*overrides)).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("m")
    return model, tiny_config(*overrides, f"MODEL.WEIGHTS={tmp_path / 'm.pth'}")


def synthetic_image(height: int = 96, width: int = 128) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    cv2.rectangle(image, (20, 15), (60, 70), (30, 200, 90), cv2.FILLED)
    cv2.circle(image, (95, 45), 20, (220, 40, 40), cv2.FILLED)
    return image


@pytest.mark.parametrize(("input_format", "given"), [("BGR", True), ("RGB", False)])
def test_matches_a_manual_run(tmp_path: Path, input_format: str, given: bool) -> None:
    model, cfg = saved_model(tmp_path, f"MODEL.INPUT_FORMAT={input_format}")
    image = synthetic_image()
    proposals = np.array(
        [[18, 12, 62, 72], [70, 20, 120, 70], [0, 0, 128, 96], [10, 40, 100, 90]], np.float32
    )
    outputs = DefaultPredictor(cfg)(image, proposals if given else None)
    assert set(outputs) == {"instances"}
    result = outputs["instances"]
    if not given:
        proposals = selective_search_boxes(image, "fast")

    # By hand: 96x128 -> shortest edge 128 (longest 170.67 < 256) -> 128x171.
    resized = cv2.resize(image, (171, 128), interpolation=cv2.INTER_LINEAR)
    if input_format == "RGB":
        resized = resized[:, :, ::-1]
    scaled = torch.tensor(proposals) * torch.tensor([171 / 128, 128 / 96, 171 / 128, 128 / 96])
    with torch.no_grad():
        (expected,) = model(
            [
                {
                    "image": torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                    "proposals": Instances((128, 171), proposal_boxes=Boxes(scaled.float())),
                    "height": 96,
                    "width": 128,
                }
            ]
        )
    expected = expected["instances"]
    assert len(expected) > 0 and result.image_size == (96, 128)
    boxes = result.pred_boxes.tensor
    torch.testing.assert_close(boxes, expected.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(result.scores, expected.scores, atol=1e-4, rtol=0)
    assert torch.equal(result.pred_classes, expected.pred_classes)
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= 128).all() and (boxes[:, 1::2] <= 96).all()


def test_empty_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"MODEL\.WEIGHTS is empty"):
        DefaultPredictor(tiny_config())


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        DefaultPredictor(tiny_config(f"MODEL.WEIGHTS={tmp_path / 'nope.pth'}"))


@pytest.mark.parametrize("kind", ["gray", "gray1", "bgra"])
def test_grayscale_and_four_channel_images_detect_as_their_bgr(tmp_path: Path, kind: str) -> None:
    _, cfg = saved_model(tmp_path)
    predictor = DefaultPredictor(cfg)
    proposals = np.array([[18, 12, 62, 72], [70, 20, 120, 70], [0, 0, 128, 96]], np.float32)
    color = synthetic_image()
    gray = cv2.cvtColor(color, cv2.COLOR_BGR2GRAY)
    image = {
        "gray": gray,
        "gray1": gray[:, :, None],
        "bgra": cv2.cvtColor(color, cv2.COLOR_BGR2BGRA),
    }[kind]
    reference = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if kind.startswith("gray") else color
    got = predictor(image, proposals)["instances"]
    expected = predictor(reference, proposals)["instances"]
    assert len(expected) > 0
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(got.scores, expected.scores)


@pytest.mark.parametrize(
    "image", [np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.float32)], ids=["2ch", "f32"]
)
def test_other_images_are_refused_with_their_shape(tmp_path: Path, image: np.ndarray) -> None:
    _, cfg = saved_model(tmp_path)
    with pytest.raises(ValueError, match="DefaultPredictor: "):
        DefaultPredictor(cfg)(image, np.array([[0, 0, 4, 4]], np.float32))


def test_indexing_instances_by_a_name_says_how_to_read_a_field() -> None:
    instances = Instances((4, 4), scores=torch.zeros(2))
    with pytest.raises(TypeError, match=r"instances\.scores or instances\.get\('scores'\)"):
        instances["scores"]
