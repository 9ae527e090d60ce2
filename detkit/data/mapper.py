"""DatasetMapper: one dataset dict → the model's input dict (image, proposals, instances)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..structures import Boxes, Instances
from ..utils.errors import UserError
from .transforms import build_transforms


class DatasetMapper:
    """Reads the image (OpenCV, BGR), applies the ``transforms`` in order (by default the
    shortest-edge resize, and in training a random horizontal flip) and moves ground-truth
    boxes and proposals with it. Boxes left without area are dropped.

    ``transforms`` are called as ``transform(image, rng) -> (image, box_map)``
    (:mod:`detkit.data.transforms`); ``rng`` is this mapper's ``numpy`` generator, reseeded by
    the training loader for every batch.

    Output: ``{"image": uint8 [3, H, W] in MODEL.INPUT_FORMAT order, "proposals":
    Instances(proposal_boxes, objectness_logits), "instances": Instances(gt_boxes, gt_classes)
    (training), "height", "width", "image_id", "file_name"}``.
    """

    def __init__(
        self,
        is_train: bool,
        transforms: Sequence[Callable],
        input_format: str = "BGR",
        seed: int | None = None,
    ) -> None:
        check_input_format("DatasetMapper", input_format)
        self.is_train = is_train
        self.transforms = list(transforms)
        self.input_format = input_format
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> DatasetMapper:
        """The transforms of ``INPUT.TRANSFORMS_TRAIN`` or ``INPUT.TRANSFORMS_TEST``."""
        return cls(is_train, build_transforms(cfg, is_train), input_format=cfg.MODEL.INPUT_FORMAT)

    def __call__(self, record: dict) -> dict:
        image = read_record_image(record)
        maps = []
        for transform in self.transforms:
            image, box_map = transform(image, self.rng)
            maps.append(box_map)
        size = image.shape[:2]
        output = {
            "image": model_image(image, self.input_format),
            "height": record["height"],
            "width": record["width"],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
        if "proposal_boxes" in record:
            boxes, keep = _apply(maps, np.asarray(record["proposal_boxes"], np.float32), size)
            logits = np.asarray(record["proposal_objectness_logits"], np.float32)[keep]
            output["proposals"] = Instances(
                size,
                proposal_boxes=Boxes(torch.from_numpy(boxes)),
                objectness_logits=torch.from_numpy(logits),
            )
        if self.is_train:
            annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
            boxes = np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4)
            classes = np.array([a["category_id"] for a in annotations], np.int64)
            boxes, keep = _apply(maps, boxes, size)
            output["instances"] = Instances(
                size,
                gt_boxes=Boxes(torch.from_numpy(boxes)),
                gt_classes=torch.from_numpy(classes[keep]),
            )
        return output


def _apply(maps, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes through every map, clipped to the image; returns those with area and their indices."""
    for box_map in maps:
        boxes = box_map(boxes)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[0])
    keep = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
    return boxes[keep], keep


def check_input_format(owner: str, input_format: str) -> None:
    """Refuses a channel order other than ``BGR`` and ``RGB``, naming ``owner``."""
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"{owner}: input_format must be BGR or RGB, got {input_format!r}")


def model_image(image_bgr: np.ndarray, input_format: str) -> torch.Tensor:
    """A BGR ``[H, W, 3]`` uint8 image as the model's ``[3, H, W]`` input in ``input_format``."""
    image = image_bgr[:, :, ::-1] if input_format == "RGB" else image_bgr
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class BadImageError(UserError, ValueError):
    """An image that cannot be used as it is: unreadable, truncated, or not the size its
    dataset dict gives. ``DATALOADER.BAD_IMAGE_POLICY`` decides what training does with one."""

    def __init__(self, message: str) -> None:
        super().__init__(_without_worker_traceback(message))


def _without_worker_traceback(message: str) -> str:
    """The one-line message of an error raised in a data-loader worker, which PyTorch re-raises
    as "Caught … Original Traceback …" ending with the original ``Type: message`` line."""
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    return message.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]


class MissingImageError(BadImageError, FileNotFoundError):
    """An image file that does not exist."""


def read_record_image(record: dict) -> np.ndarray:
    """The BGR image of a dataset dict, checked against the size the dict gives."""
    image = read_image(record["file_name"])
    if image.shape[:2] != (record["height"], record["width"]):
        hint = ""
        if image.shape[:2] == (record["width"], record["height"]):
            hint = (
                " (width and height swapped: detkit applies the file's EXIF orientation, so "
                "the dataset must give the size of the upright image, as a viewer shows it)"
            )
        raise BadImageError(
            f"{record['file_name']}: image is {image.shape[1]}x{image.shape[0]} but the "
            f"dataset says {record['width']}x{record['height']}{hint}"
        )
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as BGR uint8 ``[H, W, 3]``, turned upright by its EXIF
    orientation.

    A JPEG must end with its end-of-image marker and a PNG with its ``IEND`` chunk: OpenCV
    decodes a truncated file with only a warning, filling the missing rows with grey. Raises
    :class:`MissingImageError` or :class:`BadImageError`, naming the path.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MissingImageError(f"cannot read image {path}: no such file") from None
    except OSError as error:  # a folder, no permission, an I/O error
        raise BadImageError(f"cannot read image {path}: {error.strerror or error}") from None
    problem, has_exif = _file_problem(data)
    if problem:
        raise BadImageError(f"cannot read image {path}: {problem}")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # orientation applied below
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise BadImageError(f"cannot read image {path}: not a readable image")
    return _orient(image, _exif_orientation(data) if has_exif else 1)


def _file_problem(data: bytes) -> tuple[str | None, bool]:
    """What makes a JPEG or PNG file incomplete (None when nothing), and whether it holds an
    EXIF block; other formats are left to the decoder."""
    if not data:
        return "the file is empty", False
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_problem(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_problem(data)
    return None, False


def _jpeg_problem(data: bytes) -> tuple[str | None, bool]:
    """Walks the JPEG's marker segments to its first scan (skipping an EXIF thumbnail, which
    has its own markers); the image data after it must end with an end-of-image marker."""
    position, has_exif = 2, False
    while True:
        while data[position : position + 2] == b"\xff\xff":  # fill bytes before a marker
            position += 1
        if position + 4 > len(data):
            return "the JPEG file is truncated (it ends inside its headers)", has_exif
        if data[position] != 0xFF:
            return f"the JPEG file is corrupt (no marker at byte {position})", has_exif
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: the compressed image data follows
            break
        if marker == 0xD9:
            return "the JPEG file has no image data", has_exif
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker == 0xE1 and data[position + 4 : position + 10] == b"Exif\x00\x00":
            has_exif = True
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    if data.find(b"\xff\xd9", position + 2) < 0:
        return "the JPEG file is truncated (no end-of-image marker)", has_exif
    return None, has_exif


def _png_problem(data: bytes) -> tuple[str | None, bool]:
    """Walks the PNG's chunks: the last must be a complete ``IEND``."""
    position, has_exif = 8, False
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        position += 12 + length  # length, type, data, CRC
        if position > len(data):
            return (
                f"the PNG file is truncated (it ends inside its {kind.decode('latin-1')} chunk)",
                has_exif,
            )
        if kind == b"IEND":
            return None, has_exif
        has_exif |= kind == b"eXIf"
    return "the PNG file is truncated (no IEND chunk)", has_exif


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1 to 8; 1 when absent, unreadable or out of range)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block says nothing about the pixels
        return 1
    return orientation if 1 <= orientation <= 8 else 1


# EXIF orientation → the numpy operation that makes an [H, W, C] image upright (as a viewer
# shows it, and as PIL's ImageOps.exif_transpose does)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    if orientation == 1:
        return image
    return np.ascontiguousarray(_UPRIGHT[orientation](image))
