"""Fixtures for every test folder: tests/ and each project's tests/ under projects/."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.data import DatasetCatalog, MetadataCatalog, load_coco_json
from detkit.data.cache import CACHE_VARIABLE
from detkit.data.datasets.shapes import ensure_shapes
from detkit.data.proposals import write_detectron2_pickle

TINY_DATASET = "tiny_shapes"


def pytest_configure(config: pytest.Config) -> None:
    """Converted dataset files (:mod:`detkit.data.cache`) go into a folder of the session's,
    not the user's cache, unless ``DETKIT_CACHE_DIR`` names one; tool subprocesses inherit it."""
    if not os.environ.get(CACHE_VARIABLE):
        folder = tempfile.mkdtemp(prefix="detkit-test-cache-")
        os.environ[CACHE_VARIABLE] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a CUDA device: skipped without one, and ``pytest -m cuda``
    runs every one of them (``tools/gpu_check.py``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def _write_proposal_file(annotations_json: Path, path: Path, seed: int = 0) -> Path:
    """A detectron2-layout proposal pickle: every ground-truth box jittered four times, plus
    random boxes, so training sees foreground and background RoIs without selective search."""
    data = json.loads(annotations_json.read_text())
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[list[float]]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["bbox"])
    ids, boxes = [], []
    for image in data["images"]:
        width, height = image["width"], image["height"]
        rows = []
        for x, y, w, h in by_image.get(image["id"], []):
            for _ in range(4):
                dx1, dy1, dx2, dy2 = rng.uniform(-0.1, 0.1, 4) * [w, h, w, h]
                rows.append([x + dx1, y + dy1, x + w + dx2, y + h + dy2])
        for _ in range(12):
            x1, y1 = rng.uniform(0, [width - 24, height - 24])
            rows.append(
                [x1, y1, x1 + rng.uniform(16, width - x1), y1 + rng.uniform(16, height - y1)]
            )
        ids.append(image["id"])
        boxes.append(np.asarray(rows, np.float32))
    return write_detectron2_pickle(path, ids, boxes, [np.zeros(len(b)) for b in boxes])


@pytest.fixture(scope="session")
def write_proposal_file() -> Callable[..., Path]:
    """``write_proposal_file(annotations_json, path, seed=0)``: a proposal pickle for a COCO
    annotation file, made from its ground truth (see ``_write_proposal_file``)."""
    return _write_proposal_file


REPO = Path(__file__).resolve().parent


def _docs_example(page: str, heading: str) -> tuple[str, list[list[str]]]:
    """The YAML config and the shell commands (as word lists) of the first ```yaml and ```bash
    blocks of the section ``heading`` of ``docs/<page>``."""
    text = (REPO / "docs" / page).read_text()
    section = text[text.index(heading) :]
    section = section[: section.index("\n## ", len(heading))]
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S)[1]
    bash_block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    commands = [shlex.split(line) for line in bash_block.splitlines() if line.strip()]
    return yaml_block, commands


@pytest.fixture(scope="session")
def docs_example() -> Callable[[str, str], tuple[str, list[list[str]]]]:
    """``docs_example(page, heading)``: a worked example's config and commands, as written in
    the docs (see ``_docs_example``)."""
    return _docs_example


def _write_my_data(root: Path) -> None:
    """``root/my_data/`` as docs/datasets.md's worked example draws it: ``images/`` and COCO
    ``train.json`` / ``val.json`` (8 + 4 generated shapes images)."""
    shapes = ensure_shapes(root / "generated", "example", num_images=12, seed=5)
    coco = json.loads((shapes / "annotations.json").read_text())
    images = root / "my_data" / "images"
    images.mkdir(parents=True)
    for image in coco["images"]:
        name = Path(image["file_name"]).name
        cv2.imwrite(str(images / name), cv2.imread(str(shapes / image["file_name"])))
        image["file_name"] = name
    for split, chosen in (("train", coco["images"][:8]), ("val", coco["images"][8:])):
        ids = {image["id"] for image in chosen}
        part = {
            **coco,
            "images": chosen,
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
        }
        (root / "my_data" / f"{split}.json").write_text(json.dumps(part))


@pytest.fixture(scope="session")
def write_my_data() -> Callable[[Path], None]:
    """``write_my_data(root)``: the worked example's folder of images with COCO files."""
    return _write_my_data


@dataclass(frozen=True)
class TinyShapes:
    name: str
    folder: Path
    proposal_file: Path


@pytest.fixture(scope="session")
def tiny_shapes(
    tmp_path_factory: pytest.TempPathFactory, write_proposal_file: Callable[..., Path]
) -> Iterator[TinyShapes]:
    """Eight shapes images registered as ``tiny_shapes``, with a proposal file made from their
    ground truth: enough for a model to train a few iterations and be evaluated."""
    root = tmp_path_factory.mktemp("tiny_shapes")
    folder = ensure_shapes(root, "tiny", num_images=8, seed=11)
    proposals = write_proposal_file(folder / "annotations.json", root / "proposals.pkl")
    DatasetCatalog.register(
        TINY_DATASET, lambda: load_coco_json(folder / "annotations.json", folder, TINY_DATASET)
    )
    try:
        yield TinyShapes(TINY_DATASET, folder, proposals)
    finally:
        DatasetCatalog.remove(TINY_DATASET)
        MetadataCatalog.remove(TINY_DATASET)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module's tests: on a small, busy machine OpenMP's spinning
    threads make tiny models many times slower; results do not depend on it. A folder's
    conftest makes it apply to all its tests with an autouse fixture that requests it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
