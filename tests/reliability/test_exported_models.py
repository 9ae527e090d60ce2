"""Exported models: loading runs nothing from the file; programs run on any number of detections.

`torch.export.load` unpickles (and so runs) what a `.pt2` archive marks `"use_pickle"`, the
custom and opaque objects among its constants and example inputs that do not read as tensors;
it loads native AOTInductor code, `exec`s the program's guard code, evaluates its symbolic
size expressions with `sympy.sympify`, and the program calls whatever its nodes name.
`detkit.export.load(path)` (the documented call) reads the archive as a zip first and refuses,
with one line naming the file and the entry and before torch reads anything, every archive but
the layout `tools/export_model.py` writes: one program, weights and constants as raw tensor
bytes at least as long as their tensors need, no example inputs, no guard code, operators of
aten, detkit and torchvision only (none that reads or writes files), size expressions that only
build sympy numbers and symbols, entries stored once and uncompressed; a missing file, a FIFO
or a file that is no zip is refused the same way. It imports the libraries that register the
program's operators, so `detkit.export.load(path).module()(image, boxes)` works in a fresh
interpreter. The exported program returns as many detections as the eager model, none and one
included (torchvision's fake NMS, which claims at least two kept boxes, is replaced while
tracing).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch
from reliability_helpers import SHAPES_CONFIG, run_tool
from training_helpers import TINY_MODEL, tiny_overrides, train_net_here

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import load_config
from detkit.export import (
    ExportedProgramError,
    SingleImageDetector,
    export_detector,
    load,
    random_boxes,
    save,
)
from detkit.modeling import build_model

HEIGHT, WIDTH = 96, 160  # the tiny model's INPUT.MIN_SIZE_TEST and INPUT.MAX_SIZE_TEST
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
PROGRAM = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


@pytest.fixture(autouse=True)
def single_thread(one_thread) -> None:
    """One intra-op thread (the root conftest's ``one_thread``): tiny models run faster."""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shapes model (random weights) exported and saved by detkit.export."""
    torch.manual_seed(0)
    model = build_model(load_config(SHAPES_CONFIG, TINY_MODEL)).eval()
    program, _ = export_detector(model, HEIGHT, WIDTH, num_proposals=20)
    path = tmp_path_factory.mktemp("exported") / "model.pt2"
    save(program, path)
    return path


class _Opens:
    """Unpickled, creates the file ``path``: the stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _entries(path: Path) -> tuple[str, dict[str, bytes]]:
    """An archive's folder and its entries by name inside that folder."""
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/")[0] + "/"
        return root, {i.filename[len(root) :]: archive.read(i) for i in archive.infolist()}


def _write(
    path: Path,
    root: str,
    entries: dict[str, bytes],
    compressed: str = "",
    twice: tuple[str, bytes] | None = None,
) -> None:
    """Writes ``entries`` under ``root`` as torch does (stored); ``compressed`` names one
    entry to deflate, ``twice`` one to write a second time with other bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            method = zipfile.ZIP_DEFLATED if name == compressed else zipfile.ZIP_STORED
            archive.writestr(root + name, data, compress_type=method)
        if twice:
            with warnings.catch_warnings():  # zipfile warns of the duplicate name
                warnings.simplefilter("ignore", UserWarning)
                archive.writestr(root + twice[0], twice[1])


def _pickled_payload(config: str) -> Callable[[dict[str, bytes], Path], str]:
    """Marks the config's first tensor ``use_pickle`` and makes its record a pickle."""

    def craft(entries: dict[str, bytes], marker: Path) -> str:
        payloads = json.loads(entries[config])
        meta = next(iter(payloads["config"].values()))
        meta["use_pickle"] = True
        entries[config] = json.dumps(payloads).encode()
        record = f"{config.rsplit('/', 1)[0]}/{meta['path_name']}"
        entries[record] = pickle.dumps(_Opens(marker), protocol=2)
        return record

    return craft


def _opaque_constant(entries: dict[str, bytes], marker: Path) -> str:
    payloads = json.loads(entries[CONSTANTS_CONFIG])
    payloads["config"]["extra"] = {
        "path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None
    }  # fmt: skip
    entries[CONSTANTS_CONFIG] = json.dumps(payloads).encode()
    entries["data/constants/opaque_obj_0"] = pickle.dumps(_Opens(marker), protocol=2)
    return "data/constants/opaque_obj_0"


def _pickled_sample_inputs(entries: dict[str, bytes], marker: Path) -> str:
    entries[SAMPLE_INPUTS] = pickle.dumps(_Opens(marker), protocol=2)
    return SAMPLE_INPUTS


def _program(entries: dict[str, bytes], edit: Callable[[dict], None]) -> str:
    """Edits the program's JSON."""
    program = json.loads(entries[PROGRAM])
    edit(program)
    entries[PROGRAM] = json.dumps(program).encode()
    return PROGRAM


def _example_inputs() -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    return (torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8), random_boxes(5, HEIGHT, WIDTH)), {}


def _guard_code(entries: dict[str, bytes], marker: Path) -> str:
    """Guard code, and example inputs (torch runs the guards only with them)."""
    buffer = io.BytesIO()
    torch.save(_example_inputs(), buffer)
    entries[SAMPLE_INPUTS] = buffer.getvalue()
    guards = [f"open({str(marker)!r}, 'w') is not None"]
    return _program(entries, lambda program: program.update(guards_code=guards))


def _size_expression(entries: dict[str, bytes], marker: Path) -> str:
    def edit(program: dict) -> None:
        size = next(iter(program["graph_module"]["graph"]["sym_int_values"].values()))
        size["as_expr"]["expr_str"] = f"open({str(marker)!r}, 'w')"

    return _program(entries, edit)


# archives whose code torch's own reader runs: detkit must refuse each before it does
LIVE = [
    pytest.param(_pickled_payload(WEIGHTS_CONFIG), id="a weight marked use_pickle"),
    pytest.param(_pickled_payload(CONSTANTS_CONFIG), id="a constant marked use_pickle"),
    pytest.param(_opaque_constant, id="a pickled opaque object among the constants"),
    pytest.param(_pickled_sample_inputs, id="pickled example inputs"),
    pytest.param(_guard_code, id="guard code in the program"),
    pytest.param(_size_expression, id="code as a symbolic size expression"),
]


def _run_with_torch(path: Path) -> None:
    """What a user of torch's documented call does: load the program and run it."""
    with contextlib.suppress(Exception):
        torch.export.load(str(path)).module()(*_example_inputs()[0])


@pytest.mark.parametrize("craft", LIVE)
def test_code_in_an_archive_is_refused_before_it_runs(archive, craft, tmp_path) -> None:
    """A .pt2 archive holding code torch.export.load would run → refused by
    detkit.export.load, naming the file and the entry, before any of it runs."""
    root, entries = _entries(archive)
    marker = tmp_path / "marker"
    entry = root + craft(entries, marker)
    path = tmp_path / "crafted.pt2"
    _write(path, root, entries)
    with pytest.raises(ExportedProgramError) as refusal:
        load(path)
    message = str(refusal.value)
    assert message.startswith(f"{path}: entry '{entry}' ") and "\n" not in message
    assert not marker.exists()
    _run_with_torch(path)  # the crafted file is live: torch's reader runs its code
    assert marker.exists()


def _replace(entry: str, data: bytes) -> Callable[[Path, str, dict[str, bytes]], str]:
    def craft(path: Path, root: str, entries: dict[str, bytes]) -> str:
        entries[entry] = data
        _write(path, root, entries)
        return entry

    return craft


def _program_calling(target: str) -> Callable[[Path, str, dict[str, bytes]], str]:
    def first_node_calls_target(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    def craft(path: Path, root: str, entries: dict[str, bytes]) -> str:
        _program(entries, first_node_calls_target)
        _write(path, root, entries)
        return PROGRAM

    return craft


def _empty_record_of_a_huge_tensor(path: Path, root: str, entries: dict[str, bytes]) -> str:
    payloads = json.loads(entries[WEIGHTS_CONFIG])
    meta = next(iter(payloads["config"].values()))
    meta["tensor_meta"]["sizes"] = [{"as_int": 200_000}, {"as_int": 200_000}]
    meta["tensor_meta"]["strides"] = [{"as_int": 200_000}, {"as_int": 1}]
    entries[WEIGHTS_CONFIG] = json.dumps(payloads).encode()
    entries[f"data/weights/{meta['path_name']}"] = b""  # torch would allocate 160 GB of zeros
    _write(path, root, entries)
    return f"data/weights/{meta['path_name']}"


def _written_twice(path: Path, root: str, entries: dict[str, bytes]) -> str:
    _write(path, root, entries, twice=(WEIGHTS_CONFIG, b"{}"))
    return WEIGHTS_CONFIG


def _deflated(path: Path, root: str, entries: dict[str, bytes]) -> str:
    _write(path, root, entries, compressed=PROGRAM)
    return PROGRAM


def _cut_in_half(path: Path, root: str, entries: dict[str, bytes]) -> str:
    _write(path, root, entries)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ""


def _fifo(path: Path, root: str, entries: dict[str, bytes]) -> str:
    os.mkfifo(path)
    return ""


# archives torch would misread, or whose program would call what no model calls
REFUSED = [
    pytest.param(_replace("data/aotinductor/model/model.so", b"\x7fELF"), id="native code"),
    pytest.param(_replace("extra/notes.txt", b"hello"), id="an extra file"),
    pytest.param(_program_calling("torch.os.system"), id="a node calling torch.os.system"),
    pytest.param(_program_calling("torch.ops.aten.save.default"), id="a node calling aten::save"),
    pytest.param(_program_calling("torch.ops.mylib.op.default"), id="an operator of no library"),
    pytest.param(_empty_record_of_a_huge_tensor, id="an empty record for a 160 GB weight"),
    pytest.param(_written_twice, id="an entry written twice"),
    pytest.param(_deflated, id="a compressed entry"),
    pytest.param(_cut_in_half, id="an archive cut in half"),
    pytest.param(_fifo, id="a FIFO"),
]


@pytest.mark.parametrize("craft", REFUSED)
def test_an_archive_unlike_an_export_is_refused(archive, craft, tmp_path) -> None:
    """A .pt2 file unlike what tools/export_model.py writes → refused by detkit.export.load
    with one line naming the file and the entry, before torch reads it."""
    root, entries = _entries(archive)
    path = tmp_path / "crafted.pt2"
    entry = craft(path, root, entries)
    with pytest.raises(ExportedProgramError) as refusal:
        load(path)
    message = str(refusal.value)
    named = f"{path}: entry '{root}{entry}' " if entry else f"{path}: "
    assert message.startswith(named) and "\n" not in message


def test_a_missing_file_is_refused(tmp_path) -> None:
    """A .pt2 path that does not exist → refused with one line naming it."""
    with pytest.raises(ExportedProgramError, match=r"missing\.pt2: cannot read it: No such file"):
        load(tmp_path / "missing.pt2")


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of the shapes config trained 40 iterations at the config's learning rate
    on tiny_shapes: confident enough that a grey image gets lower scores than shapes do."""
    output = tmp_path_factory.mktemp("trained") / "run"
    train_net_here(*tiny_overrides(tiny_shapes, output, 40, "SOLVER.BASE_LR=0.03"))
    return output / "model_final.pth"


def _inputs_of_the_shapes(tiny_shapes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each tiny_shapes image at the model's input size with each of its ground-truth boxes
    as the one proposal, then with all of them."""
    data = json.loads((tiny_shapes.folder / "annotations.json").read_text())
    inputs = []
    for record in data["images"]:
        pixels = cv2.imread(str(tiny_shapes.folder / record["file_name"]))
        image = torch.from_numpy(cv2.resize(pixels, (WIDTH, HEIGHT))).permute(2, 0, 1)
        scale = torch.tensor([WIDTH / record["width"], HEIGHT / record["height"]] * 2)
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == record["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]) * scale
        inputs += [(image, box[None]) for box in boxes] + [(image, boxes)]
    return inputs


def _eager(weights: Path, score_threshold: float) -> SingleImageDetector:
    cfg = load_config(
        SHAPES_CONFIG, [*TINY_MODEL, f"MODEL.ROI_HEADS.SCORE_THRESH_TEST={score_threshold}"]
    )
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(weights))
    return SingleImageDetector(model).eval()


def _no_one_and_many(weights: Path, candidates: list) -> tuple[float, list]:
    """A score threshold and three inputs on which the eager model keeps no detection, one
    and many at that threshold, every score at least 0.01 away from it. A detection kept at
    threshold 0 is kept at ``t`` exactly when its score exceeds ``t`` (NMS goes by score)."""
    detector = _eager(weights, 0.0)
    with torch.no_grad():
        scores = [detector(image, boxes)[1] for image, boxes in candidates]
    for threshold in [round(0.1 + 0.01 * step, 2) for step in range(60)]:
        clear = [i for i, s in enumerate(scores) if ((s - threshold).abs() >= 0.01).all()]
        chosen = [
            next((i for i in clear if kept(int((scores[i] > threshold).sum()))), None)
            for kept in (lambda n: n == 0, lambda n: n == 1, lambda n: n >= 2)
        ]
        if None not in chosen:
            return threshold, [candidates[i] for i in chosen]
    raise AssertionError("the trained model keeps no, one and many detections at no threshold")


def test_the_documented_export_of_a_trained_model_runs_on_any_number_of_detections(
    trained, tiny_shapes, tmp_path
) -> None:
    """The shapes model trained a few iterations, exported with the documented command →
    the program, loaded with detkit.export.load, detects what the eager model detects on an
    input with no detection, one with one and one with many."""
    grey = torch.full((3, HEIGHT, WIDTH), 128, dtype=torch.uint8)
    candidates = [(grey, random_boxes(1, HEIGHT, WIDTH)), *_inputs_of_the_shapes(tiny_shapes)]
    threshold, inputs = _no_one_and_many(trained, candidates)
    output = tmp_path / "m.pt2"
    export = run_tool(
        "export_model.py", "--config-file", SHAPES_CONFIG, "--output", output, *TINY_MODEL,
        f"MODEL.ROI_HEADS.SCORE_THRESH_TEST={threshold}", f"MODEL.WEIGHTS={trained}",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    program = load(output).module()
    detector = _eager(trained, threshold)
    counts = []
    for image, boxes in inputs:
        with torch.no_grad():
            expected = detector(image, boxes)
        counts.append(len(expected[0]))
        for a, b in zip(program(image, boxes), expected, strict=True):
            torch.testing.assert_close(a, b)
    assert counts[:2] == [0, 1] and counts[2] >= 2
