"""DatasetMapper: one dataset dict → the model's input dict (image, proposals, instances)."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..config.defaults import InputConfig
from ..structures import Boxes, Instances
from ..utils.errors import UserError
from .proposal_store import record_proposals
from .transforms import build_transforms

# The largest image read, in pixels: ``INPUT.MAX_IMAGE_PIXELS``'s default, for callers without
# a config.
MAX_IMAGE_PIXELS: int = InputConfig.MAX_IMAGE_PIXELS


class DatasetMapper:
    """Reads the image (OpenCV, BGR), applies the ``transforms`` in order (by default the
    shortest-edge resize, and in training a random horizontal flip) and moves ground-truth
    boxes and proposals with it. Boxes left without area are dropped.

    ``transforms`` are called as ``transform(image, rng) -> (image, box_map)``
    (:mod:`detkit.data.transforms`), ``rng`` being the ``numpy`` generator the mapper is called
    with: ``mapper(record, rng)``, as the training loader calls it with one seeded for every
    batch. Called as ``mapper(record)`` (test loaders, a one-off call), it draws from its own,
    ``self.rng``, seeded by ``seed``.

    Images over ``max_image_pixels`` are refused (:func:`read_image`).

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
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        check_input_format("DatasetMapper", input_format)
        self.is_train = is_train
        self.transforms = list(transforms)
        self.input_format = input_format
        self.rng = np.random.default_rng(seed)
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> DatasetMapper:
        """The transforms of ``INPUT.TRANSFORMS_TRAIN`` or ``INPUT.TRANSFORMS_TEST``."""
        return cls(
            is_train,
            build_transforms(cfg, is_train),
            input_format=cfg.MODEL.INPUT_FORMAT,
            max_image_pixels=cfg.INPUT.MAX_IMAGE_PIXELS,
        )

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        """The model's input dict of ``record``, the transforms drawing from ``rng`` (None:
        ``self.rng``)."""
        rng = self.rng if rng is None else rng
        image = read_record_image(record, self.max_image_pixels)
        maps = []
        for transform in self.transforms:
            image, box_map = transform(image, rng)
            maps.append(box_map)
        size = image.shape[:2]
        output = {
            "image": model_image(image, self.input_format),
            "height": record["height"],
            "width": record["width"],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
        proposals = record_proposals(record)
        if proposals is not None:
            boxes, keep = _apply(maps, proposals[0], size)
            logits = proposals[1][keep]
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
    """An image that cannot be used as it is: not a regular file, unreadable, truncated, over
    the pixel limit, or not the size its dataset dict gives. ``DATALOADER.BAD_IMAGE_POLICY``
    decides what training does with one."""

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


def read_record_image(record: dict, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The BGR image of a dataset dict, checked against the size the dict gives."""
    image = read_image(record["file_name"], max_pixels)
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


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The image at ``path`` as BGR uint8 ``[H, W, 3]``, turned upright by its EXIF
    orientation.

    Nothing unbounded is read or decoded. Only a regular file is opened (a link to one is
    followed; a FIFO, a device or a folder is refused after a ``stat``, as opening a FIFO waits
    for a writer and a device may never end), and it may hold at most
    :func:`max_image_bytes` bytes. Its width and height are read from its header (JPEG, PNG, or
    a format of :data:`PILLOW_FORMATS`), and an image of more than ``max_pixels`` pixels
    (``INPUT.MAX_IMAGE_PIXELS``; 0: no limit) is refused before it is decoded. A JPEG must end
    with its end-of-image marker and a PNG with its ``IEND`` chunk: OpenCV decodes a truncated
    file with only a warning, filling the missing rows with grey. Raises
    :class:`MissingImageError` or :class:`BadImageError`, naming the path.
    """
    if max_pixels < 0:
        raise ValueError(f"max_pixels must be 0 (no limit) or more, got {max_pixels}")
    data = _read_file(path, max_image_bytes(max_pixels))
    header = _read_header(data)
    if header.problem:
        raise BadImageError(f"cannot read image {path}: {header.problem}")
    size = header.size or _size_by_pillow(data, path)
    if size is None:
        raise BadImageError(f"cannot read image {path}: not a readable image")
    width, height = size
    if max_pixels and width * height > max_pixels:
        raise BadImageError(
            f"cannot read image {path}: it is {width}x{height} ({width * height} pixels), "
            f"more than INPUT.MAX_IMAGE_PIXELS={max_pixels}"
        )
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # orientation applied below
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as error:  # e.g. over OpenCV's own bound of 2^30 pixels
        reason = str(error).strip().split("error: ", 1)[-1]
        raise BadImageError(
            f"cannot read image {path}: OpenCV cannot decode it: {reason}"
        ) from None
    if image is None:
        raise BadImageError(f"cannot read image {path}: not a readable image")
    return _orient(image, _exif_orientation(header.exif) if header.exif else 1)


# A file may hold this many bytes for each pixel the limit allows (16-bit RGBA stored
# uncompressed, the largest layout OpenCV reads as colour), plus this many for its metadata.
BYTES_PER_PIXEL = 8
METADATA_BYTES = 16 << 20


def max_image_bytes(max_pixels: int) -> int | None:
    """The largest image file read under a limit of ``max_pixels`` (None: no limit, for 0)."""
    return max_pixels * BYTES_PER_PIXEL + METADATA_BYTES if max_pixels else None


_NOT_REGULAR = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _read_file(path: str | os.PathLike, max_bytes: int | None) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` (None: all)."""
    try:
        info = os.stat(path)  # follows links; opens nothing
    except FileNotFoundError:
        raise MissingImageError(f"cannot read image {path}: no such file") from None
    except OSError as error:  # no permission on a folder above it, a loop of links
        raise BadImageError(f"cannot read image {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _NOT_REGULAR.items() if test(info.st_mode)), "a special file")
        raise BadImageError(f"cannot read image {path}: it is {kind}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise _too_large(path, info.st_size, max_bytes)
    try:
        # non-blocking: a file swapped for a FIFO after the stat reads as empty, never waits
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as file:
            data = file.read(-1 if max_bytes is None else max_bytes + 1)
    except OSError as error:  # no permission, an I/O error
        raise BadImageError(f"cannot read image {path}: {error.strerror or error}") from None
    if max_bytes is not None and len(data) > max_bytes:  # it grew, or its size is not known
        raise _too_large(path, len(data), max_bytes)
    return data


def _too_large(path: str | os.PathLike, size: int, max_bytes: int) -> BadImageError:
    return BadImageError(
        f"cannot read image {path}: the file has {size} bytes, more than the {max_bytes} an "
        f"image within INPUT.MAX_IMAGE_PIXELS may need ({BYTES_PER_PIXEL} per pixel and "
        f"{METADATA_BYTES >> 20} MiB of metadata)"
    )


@dataclass
class _Header:
    """What an image file's header says, read without decoding its pixels."""

    problem: str | None = None  # what makes the file incomplete, if anything
    size: tuple[int, int] | None = None  # (width, height) as stored (before EXIF orientation)
    exif: bytes | None = None  # the EXIF block (a TIFF structure)


def _read_header(data: bytes) -> _Header:
    """The header of a JPEG or PNG file; other formats get an empty one."""
    if not data:
        return _Header("the file is empty")
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_header(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_header(data)
    return _Header()


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic), which give the size
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> _Header:
    """Walks the JPEG's marker segments to its first scan (skipping an EXIF thumbnail, which
    has its own markers); the image data after it must end with an end-of-image marker."""
    header, position = _Header(), 2
    while True:
        while data[position : position + 2] == b"\xff\xff":  # fill bytes before a marker
            position += 1
        if position + 4 > len(data):
            header.problem = "the JPEG file is truncated (it ends inside its headers)"
            return header
        if data[position] != 0xFF:
            header.problem = f"the JPEG file is corrupt (no marker at byte {position})"
            return header
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: the compressed image data follows
            break
        if marker == 0xD9:
            header.problem = "the JPEG file has no image data"
            return header
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _JPEG_FRAMES and header.size is None and end <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            header.size = (int.from_bytes(data[position + 7 : position + 9], "big"), height)
        if marker == 0xE1 and header.exif is None and data[position + 4 : position + 10] == _EXIF:
            header.exif = data[position + 10 : end]
        position = end
    if data.find(b"\xff\xd9", position + 2) < 0:
        header.problem = "the JPEG file is truncated (no end-of-image marker)"
    return header


_EXIF = b"Exif\x00\x00"  # how an EXIF block starts in a JPEG's APP1 segment


def _png_header(data: bytes) -> _Header:
    """Walks the PNG's chunks: the last must be a complete ``IEND``."""
    header, position = _Header(), 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length  # length, type, data, CRC
        if position > len(data):
            kind_name = kind.decode("latin-1")
            header.problem = f"the PNG file is truncated (it ends inside its {kind_name} chunk)"
            return header
        if kind == b"IEND":
            return header
        if kind == b"IHDR" and header.size is None:
            header.size = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"))
        if kind == b"eXIf" and header.exif is None:
            header.exif = body
    header.problem = "the PNG file is truncated (no IEND chunk)"
    return header


# The other formats OpenCV decodes whose size Pillow reads from their header.
PILLOW_FORMATS = ("BMP", "TIFF", "WEBP", "PPM", "SUN", "JPEG2000", "GIF", "AVIF")


def _size_by_pillow(data: bytes, path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of a file in one of :data:`PILLOW_FORMATS`, from its header (Pillow
    opens lazily: nothing is decoded); None when it is none of them."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours
        try:
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
                return image.size
        except Image.DecompressionBombError as error:  # over twice Pillow's own bound
            raise BadImageError(f"cannot read image {path}: {error}") from None
        except Exception:  # not one of the formats, or a header Pillow cannot parse
            return None


def _exif_orientation(exif_block: bytes) -> int:
    """The orientation tag of an EXIF block (1 to 8; 1 when absent, unreadable or out of
    range)."""
    from PIL import Image

    try:
        exif = Image.Exif()
        exif.load(exif_block)
        orientation = int(exif.get(0x0112, 1))
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
