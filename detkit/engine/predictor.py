"""DefaultPredictor: a trained detector applied to one image, for demos and scripts."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..checkpoint import DetectionCheckpointer
from ..config import ConfigError
from ..data.loaders import evaluation_transforms
from ..data.mapper import model_image
from ..data.selective_search import selective_search_boxes
from ..modeling import build_inference_model, build_model
from ..structures import Boxes, Instances


class DefaultPredictor:
    """The model of ``cfg`` with the weights of ``cfg.MODEL.WEIGHTS``, in eval mode and as
    ``--eval-only`` evaluates it (:func:`~detkit.modeling.build_inference_model`: the detector,
    or the test pyramid wrapping it when ``TEST.MIN_SIZES`` lists one).

    Calling it on a BGR image (as OpenCV reads it; grayscale ``[H, W]`` or ``[H, W, 1]`` and
    BGRA ``[H, W, 4]`` images are converted to BGR) prepares the image as the evaluation
    loader's mapper does (:func:`~detkit.data.loaders.evaluation_transforms`: by default the
    shortest edge to ``INPUT.MIN_SIZE_TEST`` with the longest at most ``INPUT.MAX_SIZE_TEST``,
    none for a pyramid, which resizes itself; channels in ``MODEL.INPUT_FORMAT`` order), moves
    the proposals with it, and returns, as detectron2's predictor does, ``{"instances":
    Instances}`` with ``pred_boxes``, ``scores`` and ``pred_classes`` in the original image's
    pixels.
    """

    def __init__(self, cfg) -> None:
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError(
                "DefaultPredictor: MODEL.WEIGHTS is empty; give a trained checkpoint "
                "(e.g. MODEL.WEIGHTS=output/model_final.pth), random weights detect nothing"
            )
        if cfg.MODEL.INPUT_FORMAT not in ("BGR", "RGB"):
            raise ConfigError(
                f"MODEL.INPUT_FORMAT must be BGR or RGB, got {cfg.MODEL.INPUT_FORMAT!r}"
            )
        self.cfg = cfg
        self.transforms = evaluation_transforms(cfg)
        model = build_model(cfg)
        # a demo from a partly random model would look like a bad model: refuse it
        DetectionCheckpointer(model, allow_partial=False).load(cfg.MODEL.WEIGHTS)
        self.model = build_inference_model(cfg, model).eval()

    def __call__(
        self, image_bgr: np.ndarray, proposals: np.ndarray | None = None
    ) -> dict[str, Instances]:
        """``{"instances": detections}`` on ``image_bgr`` (uint8) from ``proposals`` (``[n, 4]``
        XYXY in its pixels), or from fast selective search on it (run once, here) when none are
        given."""
        image_bgr = as_bgr(image_bgr)
        height, width = image_bgr.shape[:2]
        if proposals is None:
            proposals = selective_search_boxes(image_bgr, "fast")
        image, moved = image_bgr, np.asarray(proposals, np.float32).reshape(-1, 4)
        rng = np.random.default_rng(0)  # test-time transforms draw nothing; fixed if one does
        for transform in self.transforms:
            image, move_boxes = transform(image, rng)
            moved = move_boxes(moved)
        boxes = Boxes(torch.from_numpy(moved))
        boxes.clip(image.shape[:2])
        boxes = boxes[boxes.nonempty()]
        inputs = {
            "image": model_image(image, self.cfg.MODEL.INPUT_FORMAT),
            "proposals": Instances(
                image.shape[:2],
                proposal_boxes=boxes,
                # rank order, as in detkit's selective-search proposal files
                objectness_logits=-torch.arange(len(boxes), dtype=torch.float32),
            ),
            "height": height,
            "width": width,
        }
        with torch.no_grad():
            return {"instances": self.model([inputs])[0]["instances"]}


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` BGR image from a BGR, grayscale (``[H, W]``, ``[H, W, 1]``) or
    BGRA one; anything else is refused with its shape and dtype."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"DefaultPredictor: the image must be uint8, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(
        f"DefaultPredictor: expected an [H, W, 3] BGR image (or grayscale, or BGRA), got shape "
        f"{image.shape}"
    )
