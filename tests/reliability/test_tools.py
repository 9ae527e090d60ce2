"""Tools: what the commands under tools/ are given is checked before their work.

Counts (`--max-proposals`, `--num-proposals`, `--workers`, `--repeat`, …) must be positive whole
numbers and score thresholds (`--confidence-threshold`, `--conf-threshold`) finite numbers in
[0, 1]: argparse refuses anything else with one line naming the option (exit status 2). Every
output path (`--output`, `--out`, `--json`, `--output-dir`) is checked while the command line is
parsed: a directory where a file is expected, a file where a folder is expected, a folder in
which no file can be created or a link to nothing is refused naming the path, before any work
(nothing is computed, nothing written); a missing parent folder is created. `compress_fc`
refuses weights that leave part of the model uninitialised, as `--eval-only` does
(`--allow-partial-weights` opts in). `compute_proposals` keeps an interrupted run's results
under `<out>.parts/` with a manifest of the dataset's images and the settings; parts of another
dataset or other settings are discarded with a log line, never used. A results file given to
`visualize_json_results` must hold finite boxes and scores; the first bad result is named.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import REPO, SHAPES_CONFIG, run_tool, tool_env

from detkit.data import load_coco_json
from detkit.data.datasets.shapes import ensure_shapes, shapes_split_dir
from detkit.data.mapper import read_image
from detkit.data.selective_search import selective_search_boxes

SMALL_MODEL = ["MODEL.SMALL_CONVNET.CHANNELS=[8, 8]", "MODEL.ROI_BOX_HEAD.FC_DIM=24"]
BENCHMARK_TINY = [
    "--config-file", str(SHAPES_CONFIG), "--device", "cpu", "--image-size", "64", "96",
    "--num-proposals", "30", "--repeat", "1", "--tasks", "inference",
]  # fmt: skip
DATASETS_CONFIG = "<the datasets fixture's config>"  # in a case's arguments: that file


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config registering two tiny shapes sets, ``tools_a`` and ``tools_b`` (four images
    each, the same image ids, other pictures)."""
    root = tmp_path_factory.mktemp("tool_datasets")
    entries = []
    for name, seed in (("tools_a", 1), ("tools_b", 2)):
        folder = ensure_shapes(root, name, num_images=4, seed=seed)
        entries.append(
            f"    - {{NAME: {name}, FORMAT: coco, JSON_FILE: {folder / 'annotations.json'}, "
            f"IMAGE_ROOT: {folder}}}"
        )
    config = root / "datasets.yaml"
    config.write_text(
        f"_BASE_: {SHAPES_CONFIG}\nDATASETS:\n  REGISTER:\n" + "\n".join(entries) + "\n"
        "  TEST: [tools_a]\n"
    )
    return config


def dataset_dicts(config: Path, name: str) -> list[dict]:
    folder = shapes_split_dir(config.parent, name)
    return load_coco_json(folder / "annotations.json", folder, name)


def one_line(text: str) -> str:
    """The last line of ``text``: argparse's error line, or a tool's one-line refusal."""
    return text.strip().splitlines()[-1]


def interrupt_when_a_part_is_done(command: list[str], parts: Path) -> None:
    """Runs ``command`` (a compute_proposals process) and kills it once it has finished its
    first image, as a crash or a power cut would."""
    process = subprocess.Popen(
        command, cwd=REPO, env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if any(not p.name.endswith(".tmp.npy") for p in parts.glob("*.npy")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(parts.glob("*.npy")), "the first run ended before it was interrupted"


def test_parts_of_another_dataset_are_discarded(datasets: Path, tmp_path: Path) -> None:
    """An interrupted compute_proposals run on one dataset, then another dataset to the same --out
    → the first run's parts are discarded with a log line; the file holds the second's own
    boxes."""
    out = tmp_path / "proposals.pkl"
    parts = tmp_path / "proposals.pkl.parts"
    script = REPO / "tools" / "compute_proposals.py"
    common = ["--config-file", str(datasets), "--out", str(out), "--workers", "1"]
    interrupt_when_a_part_is_done(
        [sys.executable, str(script), "--dataset", "tools_a", *common], parts
    )
    result = run_tool("compute_proposals.py", "--dataset", "tools_b", *common)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "discard" in log and str(parts) in log and "tools_a" in log
    with open(out, "rb") as file:
        written = pickle.load(file)
    for record, boxes in zip(dataset_dicts(datasets, "tools_b"), written["boxes"], strict=True):
        own = selective_search_boxes(read_image(record["file_name"]), "fast", 2000)
        assert np.array_equal(boxes, own), record["file_name"]
    assert not parts.exists()


def test_parts_of_other_settings_are_discarded(datasets: Path, tmp_path: Path) -> None:
    """An interrupted compute_proposals run, then the same dataset with another --max-proposals
    → the parts are discarded with a log line; every image gets the new count."""
    out = tmp_path / "proposals.pkl"
    parts = tmp_path / "proposals.pkl.parts"
    script = REPO / "tools" / "compute_proposals.py"
    common = ["--config-file", str(datasets), "--dataset", "tools_a", "--out", str(out)]
    interrupt_when_a_part_is_done(
        [sys.executable, str(script), *common, "--workers", "1", "--max-proposals", "50"], parts
    )
    result = run_tool("compute_proposals.py", *common, "--workers", "1", "--max-proposals", "7")
    assert result.returncode == 0, result.stderr
    assert "discard" in result.stdout + result.stderr
    with open(out, "rb") as file:
        written = pickle.load(file)
    assert [len(boxes) for boxes in written["boxes"]] == [7, 7, 7, 7]


@pytest.mark.parametrize("count", ["0", "-5"])
def test_non_positive_max_proposals(count: str, datasets: Path, tmp_path: Path) -> None:
    """compute_proposals --max-proposals 0 or -5 → refused naming the option, nothing written."""
    out = tmp_path / "p.pkl"
    result = run_tool(
        "compute_proposals.py", "--config-file", datasets, "--dataset", "tools_a", "--out", out,
        "--max-proposals", count,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--max-proposals" in one_line(result.stderr) and count in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "tool, argv",
    [
        ("analyze_model.py", ["--config-file", SHAPES_CONFIG, "--tasks", "flop"]),
        ("benchmark.py", BENCHMARK_TINY),
        ("export_model.py", ["--config-file", SHAPES_CONFIG, "--output", "m.pt2"]),
    ],
    ids=["analyze_model", "benchmark", "export_model"],
)
def test_negative_num_proposals(tool: str, argv: list) -> None:
    """--num-proposals -5 (analyze_model, benchmark, export_model) → refused naming the option,
    no traceback."""
    result = run_tool(tool, *argv, "--num-proposals", "-5", *SMALL_MODEL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--num-proposals" in one_line(result.stderr) and "-5" in one_line(result.stderr)


@pytest.mark.parametrize("value", ["2", "nan"])
@pytest.mark.parametrize(
    "tool, option",
    [("demo.py", "--confidence-threshold"), ("visualize_json_results.py", "--conf-threshold")],
    ids=["demo", "visualize_json_results"],
)
def test_score_threshold_outside_zero_to_one(
    tool: str, option: str, value: str, datasets: Path, tmp_path: Path
) -> None:
    """A score threshold of 2 or nan (demo, visualize_json_results) → refused naming the option,
    nothing drawn."""
    inputs = ["--input", datasets.parent / "tools_a" / "images"]
    if tool == "visualize_json_results.py":
        inputs = ["--input", tmp_path / "results.json", "--dataset", "tools_a"]
    output = tmp_path / "drawn"
    result = run_tool(
        tool, "--config-file", datasets, *inputs, "--output", output, f"{option}={value}"
    )
    assert result.returncode == 2
    assert option in one_line(result.stderr) and value in one_line(result.stderr)
    assert not output.exists()


@pytest.mark.parametrize(
    "bbox, score, problem",
    [
        ([float("nan"), 4.0, 10.0, 10.0], 0.9, "bbox [nan, 4.0, 10.0, 10.0]"),
        ([4.0, 4.0, -10.0, 10.0], 0.9, "bbox [4.0, 4.0, -10.0, 10.0]"),
        ([4.0, 4.0, 10.0], 0.9, "bbox [4.0, 4.0, 10.0]"),
        ([4.0, 4.0, 10.0, 10.0], float("nan"), "score nan"),
    ],
    ids=["nan-x", "negative-width", "three-numbers", "nan-score"],
)
def test_bad_boxes_in_a_results_file(
    bbox: list, score: object, problem: str, datasets: Path, tmp_path: Path
) -> None:
    """A results file with a NaN, negative-size or three-number box, or a NaN score
    (visualize_json_results) → refused naming the file, the result and the value, nothing
    drawn."""
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 8.0, 8.0], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": bbox, "score": score},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    output = tmp_path / "drawn"
    result = run_tool(
        "visualize_json_results.py", "--config-file", datasets, "--dataset", "tools_a",
        "--input", path, "--output", output,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert str(path) in line and "result 1" in line and problem in line
    assert not output.exists()


def torchvision_vgg_layout_weights(path: Path) -> Path:
    """A small state dict in torchvision's VGG layout (``features.*``, ``classifier.*``): the
    weights of another model, which fill none of the shapes model's."""
    torch.manual_seed(0)
    state = {
        "features.0.weight": torch.randn(4, 3, 3, 3),
        "features.0.bias": torch.randn(4),
        "classifier.0.weight": torch.randn(16, 36),
        "classifier.0.bias": torch.randn(16),
        "classifier.3.weight": torch.randn(16, 16),
        "classifier.3.bias": torch.randn(16),
    }
    torch.save(state, path)
    return path


def test_compress_fc_refuses_weights_of_another_model(tmp_path: Path) -> None:
    """compress_fc with the weights of another model (torchvision VGG layout) → refused naming
    the file and the weights left uninitialised; nothing written."""
    weights = torchvision_vgg_layout_weights(tmp_path / "vgg.pth")
    output = tmp_path / "compressed.pth"
    result = run_tool(
        "compress_fc.py", "--config-file", SHAPES_CONFIG, "--ranks", "fc6=4",
        "--output", output, *SMALL_MODEL, f"MODEL.WEIGHTS={weights}",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert str(weights) in line and "of the model's" in line and "uninitialised" in line
    assert not output.exists()


# (tool, its options, the output option, config overrides); the overrides come last
FILE_OPTIONS = [
    (
        "compress_fc.py",
        ["--config-file", SHAPES_CONFIG, "--ranks", "fc6=4"],
        "--output",
        SMALL_MODEL,
    ),
    (
        "compute_proposals.py",
        ["--config-file", DATASETS_CONFIG, "--dataset", "tools_a"],
        "--out",
        [],
    ),
    ("benchmark.py", BENCHMARK_TINY, "--json", SMALL_MODEL),
    ("benchmark_ops.py", ["--device", "cpu", "--shapes", "b", "--repeat", "1"], "--json", []),
    ("export_model.py", ["--config-file", SHAPES_CONFIG], "--output", ["MODEL.WEIGHTS=m.pth"]),
]
FOLDER_OPTIONS = [
    ("demo.py", ["--config-file", SHAPES_CONFIG, "--input", SHAPES_CONFIG], "--output", []),
    (
        "visualize_data.py",
        ["--config-file", DATASETS_CONFIG, "--source", "annotation"],
        "--output",
        ["DATASETS.TRAIN=[tools_a]", "DATASETS.PROPOSAL_FILES_TRAIN=[]"],
    ),
    ("visualize_json_results.py", ["--input", "r.json", "--dataset", "tools_a"], "--output", []),
    ("compare_runs.py", ["--run", "x=tools/train_net.py:a.yaml"], "--output-dir", []),
]


def tool_id(case: tuple) -> str:
    return f"{case[0].removesuffix('.py')} {case[2]}"


def run_case(case: tuple, output: Path, datasets: Path) -> subprocess.CompletedProcess:
    """Runs a case of :data:`FILE_OPTIONS` or :data:`FOLDER_OPTIONS` with ``output``."""
    tool, options, option, overrides = case
    options = [datasets if word == DATASETS_CONFIG else word for word in options]
    return run_tool(tool, *options, option, output, *overrides)


@pytest.mark.parametrize("case", FILE_OPTIONS, ids=tool_id)
def test_an_existing_directory_as_an_output_file(
    case: tuple, datasets: Path, tmp_path: Path
) -> None:
    """An existing directory as a tool's output file (compress_fc, compute_proposals, benchmark,
    benchmark_ops, export_model) → refused naming it before any work; nothing written."""
    folder = tmp_path / "taken"
    folder.mkdir()
    result = run_case(case, folder, datasets)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert case[2] in line and str(folder) in line and "is a directory" in line
    assert result.stdout == "" and sorted(tmp_path.iterdir()) == [folder]
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("case", FOLDER_OPTIONS, ids=tool_id)
def test_a_file_as_an_output_folder(case: tuple, datasets: Path, tmp_path: Path) -> None:
    """An existing file as a tool's output folder (demo, visualize_data, visualize_json_results,
    compare_runs) → refused naming it before any work; the file is untouched."""
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = run_case(case, taken, datasets)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert case[2] in line and str(taken) in line and "is a file" in line
    assert taken.read_text() == "mine" and sorted(tmp_path.iterdir()) == [taken]


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which no file can be created: read-only for a user, ``/sys`` for root (whom
    permissions do not stop)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir(mode=0o555)
        return folder
    try:
        (Path("/sys") / ".detkit-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses new files to root")


@pytest.mark.parametrize("case", [FILE_OPTIONS[1], FOLDER_OPTIONS[1]], ids=tool_id)
def test_an_unwritable_output_folder(case: tuple, unwritable_folder: Path, datasets: Path) -> None:
    """An output path inside a folder where no file can be created (compute_proposals --out,
    visualize_data --output) → refused naming the folder, before any work."""
    result = run_case(case, unwritable_folder / "new" / "out", datasets)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert case[2] in line and f"no file can be created in {unwritable_folder}" in line


def test_a_dangling_link_in_the_output_path(tmp_path: Path) -> None:
    """An output path whose folder is a link to nothing (compress_fc --output) → refused naming
    the link, before any work."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "deleted")
    result = run_tool(
        "compress_fc.py", "--config-file", SHAPES_CONFIG, "--ranks", "fc6=4",
        "--output", link / "out.pth",
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{link} is a link to nothing" in one_line(result.stderr)


def test_a_missing_parent_folder_of_an_output_file(tmp_path: Path) -> None:
    """benchmark --json into folders that do not exist yet → they are created and the file
    written."""
    report = tmp_path / "new" / "deeper" / "bench.json"
    result = run_tool("benchmark.py", *BENCHMARK_TINY, "--json", report, *SMALL_MODEL)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["setting"]["image_size"] == [64, 96]
