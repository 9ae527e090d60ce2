"""Images: a corrupt, truncated or oversized file is refused, not decoded into grey or memory.

`detkit.data.mapper.read_image` reads every image (training, evaluation, selective search, the
demo, the visualisers). Only a regular file is opened (links are followed; a FIFO, a device or
a folder is refused after a `stat`, never opened), of at most 8 bytes per allowed pixel plus
16 MiB; its width and height are read from its header (JPEG, PNG, or through Pillow BMP, TIFF,
WebP, PPM, Sun raster, JPEG 2000, GIF, AVIF) and an image of more than `INPUT.MAX_IMAGE_PIXELS`
pixels (default 89478485, Pillow's decompression-bomb bound; 0: no limit) is refused before it
is decoded; every caller with a config passes the key. A JPEG must end with its end-of-image
marker after its first scan and a PNG with its `IEND` chunk (OpenCV decodes a truncated file
with only a warning and grey rows); a missing, empty, unreadable, truncated or oversized file,
one OpenCV cannot decode, or one of another size than its record, raises `BadImageError`
(`MissingImageError`, a `FileNotFoundError`, for a missing file) naming the path.
EXIF orientation is applied to the pixels, as a viewer and detectron2 do; annotations and the
dataset's sizes are those of the upright image, and a record giving the raw size is refused
with a hint. In training, `DATALOADER.BAD_IMAGE_POLICY: stop` (default) stops the run naming the
file; `skip` logs the file and maps another image of the same orientation in its place (drawn
from the seed, so a resumed run sees the same), until a loader process has met more than
`DATALOADER.MAX_BAD_IMAGES` distinct bad images, which it then lists. Evaluation always stops.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import re
import resource
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from reliability_helpers import SHAPES_CONFIG, TinyRun, run_tool

from detkit.config import ConfigError, check_config, load_config
from detkit.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    load_coco_json,
)
from detkit.data.loaders import evaluation_mapper, index_batches
from detkit.data.mapper import (
    BadImageError,
    DatasetMapper,
    MissingImageError,
    read_image,
    read_record_image,
)


def pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR image whose quadrants differ, so any flip or rotation shows."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (255, 255, 255)
    return image


def noise(height: int = 48, width: int = 64) -> np.ndarray:
    """Random pixels: a JPEG of them is mostly compressed data, so a cut falls inside it."""
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)


def write(path: Path, image: np.ndarray | None = None) -> Path:
    cv2.imwrite(str(path), pattern() if image is None else image)
    return path


def truncate(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_exif_jpeg(path: Path, orientation: int, image: np.ndarray | None = None) -> Path:
    """A JPEG (written by PIL) whose EXIF says ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = (pattern() if image is None else image)[:, :, ::-1]
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_truncated_jpeg(tmp_path: Path) -> None:
    """A JPEG cut at 60% → refused as truncated, naming the file (not grey rows)."""
    path = truncate(write(tmp_path / "cut.jpg", noise()))
    with pytest.raises(BadImageError, match=r"cut\.jpg: the JPEG file is truncated \(no end-of"):
        read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    """A PNG cut at 60% → refused as truncated, naming the file."""
    path = truncate(
        write(
            tmp_path / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
        )
    )
    with pytest.raises(BadImageError, match=r"cut\.png: the PNG file is truncated"):
        read_image(path)


def test_jpeg_cut_just_before_its_end_marker(tmp_path: Path) -> None:
    """A JPEG missing only its end-of-image marker → refused as truncated."""
    path = write(tmp_path / "a.jpg")
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(BadImageError, match="no end-of-image marker"):
        read_image(path)


def test_truncated_jpeg_with_an_end_marker_in_its_headers(tmp_path: Path) -> None:
    """A cut JPEG with an end marker in a header segment → still refused."""
    data = write(tmp_path / "a.jpg", noise()).read_bytes()
    comment = b"\xff\xd8 thumbnail \xff\xd9"
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    path = tmp_path / "b.jpg"
    path.write_bytes(data[:2] + segment + data[2 : int(len(data) * 0.7)])
    with pytest.raises(BadImageError, match=r"b\.jpg: the JPEG file is truncated \(no end-of"):
        read_image(path)


def test_complete_jpeg_and_png_read_unchanged(tmp_path: Path) -> None:
    """Complete JPEG and PNG files → read as OpenCV reads them, pixel for pixel."""
    for name in ("a.jpg", "a.png"):
        path = write(tmp_path / name)
        assert np.array_equal(read_image(path), cv2.imread(str(path)))


def test_empty_file(tmp_path: Path) -> None:
    """An empty image file → refused, naming the file."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.jpg: the file is empty"):
        read_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path: Path) -> None:
    """A text file named .png → refused as not a readable image, naming it."""
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(BadImageError, match=r"junk\.png: not a readable image"):
        read_image(tmp_path / "junk.png")


def test_missing_image(tmp_path: Path) -> None:
    """A missing image → MissingImageError (a FileNotFoundError) naming the path."""
    with pytest.raises(MissingImageError, match=r"gone\.jpg: no such file"):
        read_image(tmp_path / "gone.jpg")
    assert issubclass(MissingImageError, FileNotFoundError)


def test_folder_as_image(tmp_path: Path) -> None:
    """A folder where the image should be → refused, naming the path."""
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(BadImageError, match=r"dir\.jpg: "):
        read_image(tmp_path / "dir.jpg")


def test_image_of_another_size_than_its_record(tmp_path: Path) -> None:
    """A 64x48 image whose record says 100x80 → refused, naming both sizes."""
    record = {"file_name": str(write(tmp_path / "a.png")), "height": 80, "width": 100}
    with pytest.raises(BadImageError, match=r"a\.png: image is 64x48 but the dataset says 100x80"):
        read_record_image(record)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pil_applies_it(tmp_path: Path, orientation: int) -> None:
    """A JPEG with EXIF orientation 1-8 → made upright as PIL's exif_transpose does."""
    path = write_exif_jpeg(tmp_path / "o.jpg", orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))[:, :, ::-1]
    got = read_image(path)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4


def test_exif_rotated_photo_size_and_boxes(tmp_path: Path) -> None:
    """An EXIF-rotated JPEG → upright pixels and size; raw size refused with a hint."""
    path = write_exif_jpeg(tmp_path / "photo.jpg", 6)
    upright = read_image(path)
    assert upright.shape[:2] == (64, 48)
    # raw top-left (blue) ends up top-right after a clockwise quarter turn
    assert tuple(upright[5, -5]) == pytest.approx((255, 0, 0), abs=40)
    data = {
        "images": [{"id": 1, "file_name": "photo.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 40, 60]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    (record,) = load_coco_json(tmp_path / "a.json", tmp_path)
    assert (record["height"], record["width"]) == (64, 48)
    with pytest.raises(BadImageError, match="detkit applies the file's EXIF orientation"):
        read_record_image({**record, "height": 48, "width": 64})


def records(tmp_path: Path, count: int = 6, bad: tuple[int, ...] = ()) -> list[dict]:
    """``count`` landscape 64x48 images; those in ``bad`` truncated."""
    dicts = []
    for index in range(count):
        path = write(tmp_path / f"{index}.jpg", noise())
        if index in bad:
            truncate(path)
        dicts.append(
            {
                "file_name": str(path),
                "height": 48,
                "width": 64,
                "image_id": index,
                "annotations": [],
            }
        )
    return dicts


def batches(dicts: list[dict], count: int, **policy) -> list[list[dict]]:
    loader = build_detection_train_loader(
        dicts, DatasetMapper(True, []), total_batch_size=2, seed=3, **policy
    )
    return list(itertools.islice(loader, count))


def test_training_stops_on_a_bad_image_by_default(tmp_path: Path) -> None:
    """A truncated training image, policy stop → the loader raises naming it."""
    with pytest.raises(BadImageError, match=r"2\.jpg: the JPEG file is truncated"):
        batches(records(tmp_path, bad=(2,)), 6)


def test_skip_policy_replaces_and_logs_a_bad_image(tmp_path: Path, caplog) -> None:
    """A truncated image, policy skip → replaced, batches full, logged once."""
    with caplog.at_level(logging.WARNING):
        got = batches(records(tmp_path, bad=(2,)), 9, bad_image_policy="skip", max_bad_images=1)
    ids = [item["image_id"] for batch in got for item in batch]
    assert len(ids) == 18 and 2 not in ids and set(ids) == {0, 1, 3, 4, 5}
    skips = [r.getMessage() for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert len(skips) == 1 and "2.jpg (1 of at most 1" in skips[0]


def test_skip_policy_replacements_are_deterministic(tmp_path: Path) -> None:
    """The same run twice under policy skip → the same replacement images."""
    dicts = records(tmp_path, bad=(1, 4))

    def ids():
        got = batches(dicts, 8, bad_image_policy="skip", max_bad_images=2)
        return [[item["image_id"] for item in batch] for batch in got]

    assert ids() == ids()


def test_skip_policy_stops_past_the_bound(tmp_path: Path) -> None:
    """Three bad images, MAX_BAD_IMAGES 2 → the loader raises, listing them."""
    with pytest.raises(
        BadImageError,
        match=r"3 bad images, more than DATALOADER\.MAX_BAD_IMAGES=2: .*\.jpg, .*\.jpg, .*\.jpg",
    ):
        batches(records(tmp_path, bad=(0, 2, 4)), 20, bad_image_policy="skip", max_bad_images=2)


def test_unknown_bad_image_policy(tmp_path: Path) -> None:
    """BAD_IMAGE_POLICY ignore → ConfigError naming the key and the choices."""
    with pytest.raises(
        ConfigError, match=r"DATALOADER\.BAD_IMAGE_POLICY must be one of stop, skip, got 'ignore'"
    ):
        batches(records(tmp_path, count=2), 1, bad_image_policy="ignore")


def test_evaluation_stops_on_a_bad_image(tmp_path: Path) -> None:
    """A truncated image in a test set → the test loader raises naming it."""
    loader = build_detection_test_loader(
        records(tmp_path, bad=(3,)), mapper=DatasetMapper(False, [])
    )
    with pytest.raises(BadImageError, match=r"3\.jpg: the JPEG file is truncated"):
        list(loader)


def test_bad_image_in_a_loader_worker_keeps_its_one_line_message(tmp_path: Path) -> None:
    """A truncated image read in a loader worker → BadImageError with one line, no traceback."""
    dicts = records(tmp_path, count=2, bad=(1,))
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(False, []), num_workers=1)
    with pytest.raises(BadImageError) as caught:
        list(loader)
    message = f"cannot read image {dicts[1]['file_name']}: the JPEG file is truncated (no end-"
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_skip_policy_with_loader_workers(tmp_path: Path) -> None:
    """Policy skip with 2 loader workers → the same batches as in one process."""
    dicts = records(tmp_path, bad=(1, 4))

    def ids(workers: int) -> list[list[int]]:
        got = batches(dicts, 8, bad_image_policy="skip", max_bad_images=2, num_workers=workers)
        return [[item["image_id"] for item in batch] for batch in got]

    assert ids(2) == ids(0)


def first_training_image(run: TinyRun, seed: int, batch_size: int) -> Path:
    """The image the first training batch of a tiny run starts with."""
    folder = run.root / "shapes" / "val"
    dicts = load_coco_json(folder / "annotations.json", folder)
    first = next(index_batches([d["width"] >= d["height"] for d in dicts], batch_size, seed))
    return Path(dicts[first[0]]["file_name"])


def train_with_a_spoilt_image(
    tiny_run: TinyRun, tmp_path: Path, spoil: Callable[[Path], object], **overrides: object
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """A tiny train_net run (2 iterations, no test set) on a copy of the data whose first
    training image ``spoil`` changed; the result, the image and the output folder."""
    run = TinyRun(tmp_path / "datasets", tiny_run.proposals)
    shutil.copytree(tiny_run.root, run.root)
    image = first_training_image(run, seed=7, batch_size=2)
    spoil(image)
    output = tmp_path / "out"
    arguments = run.overrides(
        output,
        2,
        SEED=7,
        SOLVER__IMS_PER_BATCH=2,
        DATASETS__TEST="[]",
        DATASETS__PROPOSAL_FILES_TEST="[]",
        **overrides,
    )
    result = run_tool("train_net.py", "--config-file", SHAPES_CONFIG, *arguments, root=run.root)
    return result, image, output


def test_train_net_skips_a_truncated_image(tiny_run: TinyRun, tmp_path: Path) -> None:
    """train_net, a truncated image, policy skip → exit 0, log.txt names it."""
    result, image, output = train_with_a_spoilt_image(
        tiny_run, tmp_path, truncate, DATALOADER__BAD_IMAGE_POLICY="skip"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skipping bad image {image}" in (output / "log.txt").read_text()


def test_train_net_stops_on_a_truncated_image(tiny_run: TinyRun, tmp_path: Path) -> None:
    """train_net, a truncated image, policy stop → exit 2, one line naming it."""
    result, image, _ = train_with_a_spoilt_image(tiny_run, tmp_path, truncate)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"cannot read image {image}: the PNG file is truncated" in result.stderr


def png_declaring(width: int, height: int) -> bytes:
    """A complete PNG (IHDR, IDAT, IEND) that declares ``width`` x ``height`` 8-bit grey pixels
    but compresses only its first row: a few hundred bytes, whatever size it claims."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    first_row = zlib.compress(bytes(width + 1), 9)  # filter byte 0, then the row's pixels
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", first_row),
            chunk(b"IEND", b""),
        ]
    )


def test_png_of_30000_by_30000_pixels(tmp_path: Path) -> None:
    """A 30000x30000 PNG of a few hundred bytes → refused from its header before decoding,
    naming the file, its size and INPUT.MAX_IMAGE_PIXELS."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(30000, 30000))
    with pytest.raises(
        BadImageError,
        match=r"bomb\.png: it is 30000x30000 \(900000000 pixels\), more than "
        r"INPUT\.MAX_IMAGE_PIXELS=89478485",
    ):
        read_image(path)


def test_png_of_60000_by_60000_pixels(tmp_path: Path) -> None:
    """A 60000x60000 PNG → refused naming the file, under the limit's default and, with the
    limit off, with OpenCV's reason in one line (no raw OpenCV assertion)."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_declaring(60000, 60000))
    with pytest.raises(BadImageError, match=r"huge\.png: it is 60000x60000 \(3600000000 pix"):
        read_image(path)
    with pytest.raises(BadImageError, match=r"huge\.png: OpenCV cannot decode it: .*PIXELS") as e:
        read_image(path, max_pixels=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("extension", ["jpg", "png", "bmp", "tiff", "webp", "ppm"])
def test_pixel_limit_read_from_each_format_header(tmp_path: Path, extension: str) -> None:
    """A 64x48 JPEG, PNG, BMP, TIFF, WebP or PPM with a limit of 3071 pixels → refused from
    its header, naming the file; with a limit of 3072 → read."""
    path = write(tmp_path / f"a.{extension}")
    with pytest.raises(BadImageError, match=rf"a\.{extension}: it is 64x48 \(3072 pixels\)"):
        read_image(path, max_pixels=64 * 48 - 1)
    assert read_image(path, max_pixels=64 * 48).shape == (48, 64, 3)


def test_file_larger_than_its_pixels_can_need(tmp_path: Path) -> None:
    """A 2x2 PNG padded with 17 MiB of text under a 4-pixel limit → refused before it is read,
    naming the file and the bound."""
    data = png_declaring(2, 2)
    padding = b"Comment\x00" + bytes(17 << 20)
    chunk = struct.pack(">I", len(padding)) + b"tEXt" + padding + b"\0\0\0\0"
    path = tmp_path / "padded.png"
    path.write_bytes(data[:33] + chunk + data[33:])
    with pytest.raises(BadImageError, match=r"padded\.png: the file has 17825\d* bytes, more"):
        read_image(path, max_pixels=4)


def outcome_in_child(path: Path, seconds: float = 20) -> str:
    """What ``read_image(path)`` does in a forked child given ``seconds`` and 1 GiB more
    memory than it starts with: its error's message, ``read``, or why it was stopped, so that
    a regression fails the test instead of hanging it or exhausting the machine's memory."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def run() -> None:
        status = Path("/proc/self/status").read_text()
        used = int(re.search(r"VmSize:\s+(\d+) kB", status)[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), used + (1 << 30)))
        try:
            read_image(path)
            sender.send("read")
        except BadImageError as error:
            sender.send(str(error))
        except MemoryError:
            sender.send("ran out of memory")

    child = context.Process(target=run)
    child.start()
    if not receiver.poll(seconds):
        child.kill()
        child.join()
        return f"still reading after {seconds} s"
    outcome = receiver.recv()
    child.join()
    return outcome


def test_fifo_named_as_an_image(tmp_path: Path) -> None:
    """A FIFO named as an image → refused at once, naming it, without opening it (opening a
    FIFO waits for a writer for ever)."""
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    assert outcome_in_child(path) == f"cannot read image {path}: it is a FIFO, not a regular file"


def test_link_to_dev_zero_named_as_an_image(tmp_path: Path) -> None:
    """A link to /dev/zero named as an image → refused at once, naming the link (it would be
    read until memory runs out)."""
    path = tmp_path / "zero.jpg"
    path.symlink_to("/dev/zero")
    assert outcome_in_child(path) == (
        f"cannot read image {path}: it is a character device, not a regular file"
    )


def test_link_to_an_image_is_read(tmp_path: Path) -> None:
    """A link to a regular image file → followed and read as the file."""
    target = write(tmp_path / "a.png")
    (tmp_path / "link.png").symlink_to(target)
    assert np.array_equal(read_image(tmp_path / "link.png"), cv2.imread(str(target)))


def test_mapper_applies_the_configured_pixel_limit(tmp_path: Path) -> None:
    """INPUT.MAX_IMAGE_PIXELS=3000 and a 64x48 training image → the mapper refuses it, naming
    the file and the key."""
    cfg = load_config(SHAPES_CONFIG, ["INPUT.MAX_IMAGE_PIXELS=3000", "TEST.MIN_SIZES=[32, 64]"])
    record = {"file_name": str(write(tmp_path / "a.png")), "height": 48, "width": 64}
    with pytest.raises(BadImageError, match=r"a\.png: it is 64x48 .*MAX_IMAGE_PIXELS=3000"):
        DatasetMapper.from_config(cfg, is_train=False)({**record, "image_id": 0})
    with pytest.raises(BadImageError, match=r"a\.png: it is 64x48 .*MAX_IMAGE_PIXELS=3000"):
        evaluation_mapper(cfg)({**record, "image_id": 0})  # a test pyramid's mapper


def test_negative_pixel_limit() -> None:
    """INPUT.MAX_IMAGE_PIXELS=-1 → refused before the run, naming the key."""
    cfg = load_config(SHAPES_CONFIG, ["INPUT.MAX_IMAGE_PIXELS=-1"])
    with pytest.raises(ConfigError, match=r"INPUT\.MAX_IMAGE_PIXELS must be 0 or more, got -1"):
        check_config(cfg)


def test_skip_policy_skips_an_image_over_the_pixel_limit(tmp_path: Path) -> None:
    """A 30000x30000 PNG among training images, policy skip → skipped like any bad image."""
    dicts = records(tmp_path)
    Path(dicts[3]["file_name"]).write_bytes(png_declaring(30000, 30000))
    got = batches(dicts, 6, bad_image_policy="skip", max_bad_images=1)
    assert 3 not in {item["image_id"] for batch in got for item in batch}


def test_train_net_stops_on_a_huge_png(tiny_run: TinyRun, tmp_path: Path) -> None:
    """train_net whose dataset holds a 30000x30000 PNG → exit 2, one line naming the file and
    INPUT.MAX_IMAGE_PIXELS."""
    result, image, _ = train_with_a_spoilt_image(
        tiny_run, tmp_path, lambda path: path.write_bytes(png_declaring(30000, 30000))
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [text for text in result.stderr.splitlines() if str(image) in text]
    assert f"cannot read image {image}: it is 30000x30000 (900000000 pixels)" in line
    assert "INPUT.MAX_IMAGE_PIXELS" in line
