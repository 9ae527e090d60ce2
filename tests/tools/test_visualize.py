"""tools/visualize_data.py and tools/visualize_json_results.py on the tiny shapes set: one PNG per
image, of the expected size, with boxes drawn where the ground truth, the proposals and the
results put them, and one-line errors with exit status 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from detkit.data import DatasetCatalog
from detkit.data.transforms import resize_scale
from detkit.utils.visualizer import GAP, PROPOSAL_GREY, class_color

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def visualize_data() -> ModuleType:
    return load_tool("visualize_data")


@pytest.fixture(scope="module")
def visualize_json_results() -> ModuleType:
    return load_tool("visualize_json_results")


def data_overrides(tiny) -> list[str]:
    return [
        f"DATASETS.TRAIN=[{tiny.name}]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{tiny.proposal_file}]",
        "DATASETS.PROPOSAL_LOADER",  # a detectron2-style KEY VALUE pair
        "auto",
    ]


def edge_colour_share(picture: np.ndarray, x: float, y1: float, y2: float, colour) -> float:
    """The largest share of pixels in ``colour`` on the column at ``x`` (±1) between ``y1`` and
    ``y2``: where a box's left edge is drawn, most of them (labels may cover a few)."""
    rows = slice(round(y1) + 2, round(y2) - 1)
    return max(
        float((picture[rows, column] == colour).all(axis=1).mean())
        for column in range(round(x) - 1, round(x) + 2)
    )


def test_annotations_are_drawn_with_their_proposals(visualize_data, tiny_shapes, tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["--config-file", str(CONFIG), "--source", "annotation", "--output", str(out)]
    argv += ["--show-proposals", "5", "--min-size", "0", *data_overrides(tiny_shapes)]
    assert visualize_data.main(argv) == 0
    records = DatasetCatalog.get(tiny_shapes.name)
    written = sorted(p.name for p in (out / tiny_shapes.name).iterdir())
    assert written == sorted(f"{Path(r['file_name']).stem}.png" for r in records)
    for record in records:
        picture = cv2.imread(str(out / tiny_shapes.name / f"{Path(record['file_name']).stem}.png"))
        assert picture.shape == (record["height"], record["width"], 3)
        for annotation in record["annotations"]:
            x1, y1, _, y2 = annotation["bbox"]
            colour = class_color(annotation["category_id"])
            assert edge_colour_share(picture, x1, y1, y2, colour) > 0.5, annotation
    assert (picture == PROPOSAL_GREY).all(axis=2).sum() > 20, "no proposal drawn"


def test_the_dataloader_source_shows_the_resized_and_flipped_images(
    visualize_data, tiny_shapes, tmp_path
) -> None:
    out = tmp_path / "out"
    argv = ["--config-file", str(CONFIG), "--source", "dataloader", "--output", str(out)]
    argv += ["--min-size", "0", "--num-images", "4", *data_overrides(tiny_shapes)]
    argv += ["INPUT.MIN_SIZE_TRAIN=[128]", "INPUT.MAX_SIZE_TRAIN=1000"]
    assert visualize_data.main(argv) == 0
    records = DatasetCatalog.get(tiny_shapes.name)[:4]
    assert len(list((out / tiny_shapes.name).iterdir())) == 4
    for record in records:
        picture = cv2.imread(str(out / tiny_shapes.name / f"{Path(record['file_name']).stem}.png"))
        scale = resize_scale(record["height"], record["width"], 128, 1000)
        width = round(record["width"] * scale)
        assert picture.shape == (round(record["height"] * scale), width, 3)
        for annotation in record["annotations"]:
            x1, y1, x2, y2 = (v * scale for v in annotation["bbox"])
            colour = class_color(annotation["category_id"])
            share = max(
                edge_colour_share(picture, x1, y1, y2, colour),  # as loaded
                edge_colour_share(picture, width - x2, y1, y2, colour),  # flipped
            )
            assert share > 0.5, (record["file_name"], annotation)


def test_proposals_without_a_proposal_file_are_refused(
    visualize_data, tiny_shapes, tmp_path, capsys
) -> None:
    argv = ["--config-file", str(CONFIG), "--source", "annotation", "--output", str(tmp_path)]
    argv += ["--show-proposals", f"DATASETS.TRAIN=[{tiny_shapes.name}]"]
    assert visualize_data.main([*argv, "DATASETS.PROPOSAL_FILES_TRAIN=[]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "DATASETS.PROPOSAL_FILES_TRAIN" in err


def test_an_unknown_dataset_is_named(visualize_data, tmp_path, capsys) -> None:
    argv = ["--config-file", str(CONFIG), "--source", "annotation", "--output", str(tmp_path)]
    assert visualize_data.main([*argv, "DATASETS.TRAIN=[shapes_trian]"]) == 2
    err = capsys.readouterr().err
    assert "'shapes_trian' is not registered" in err and "Traceback" not in err


def write_results(tiny, path: Path) -> list[dict]:
    """Results of every ground-truth object of the tiny set's annotation file (COCO category
    ids, which start at 1), moved 3 px right, with a score below the threshold for the last."""
    data = json.loads((tiny.folder / "annotations.json").read_text())
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": [a["bbox"][0] + 3, *a["bbox"][1:]],
            "score": 0.9,
        }
        for a in data["annotations"]
    ]
    results[-1]["score"] = 0.2
    path.write_text(json.dumps(results))
    return results


def test_results_are_drawn_next_to_the_ground_truth(
    visualize_json_results, tiny_shapes, tmp_path
) -> None:
    results = write_results(tiny_shapes, tmp_path / "results.json")
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "results.json"), "--dataset", tiny_shapes.name]
    assert visualize_json_results.main([*argv, "--output", str(out), "--min-size", "0"]) == 0
    records = DatasetCatalog.get(tiny_shapes.name)
    assert len(list(out.iterdir())) == len(records)
    for record in records:
        picture = cv2.imread(str(out / f"{Path(record['file_name']).stem}.png"))
        width = record["width"]
        bar = picture.shape[0] - record["height"]
        assert picture.shape[1] == 2 * width + GAP and 5 < bar < 40
        left, right = picture[bar:, :width], picture[bar:, width + GAP :]
        for annotation in record["annotations"]:
            x1, y1, _, y2 = annotation["bbox"]
            colour = class_color(annotation["category_id"])  # COCO id 1 is class 0
            assert edge_colour_share(right, x1, y1, y2, colour) > 0.5
            shown = any(
                r["image_id"] == record["image_id"]
                and r["score"] > 0.5
                and np.isclose(r["bbox"][0], x1 + 3)
                for r in results
            )
            assert (edge_colour_share(left, x1 + 3, y1, y2, colour) > 0.5) == shown


def test_results_of_another_dataset_are_refused(
    visualize_json_results, tiny_shapes, tmp_path, capsys
) -> None:
    results = write_results(tiny_shapes, tmp_path / "results.json")
    results[0]["image_id"], results[1]["category_id"] = 9999, 7
    (tmp_path / "results.json").write_text(json.dumps(results))
    argv = ["--input", str(tmp_path / "results.json"), "--dataset", tiny_shapes.name]
    assert visualize_json_results.main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "image_id 9999" in err and "category_id 7" in err
    assert not (tmp_path / "out").exists(), "files were written before refusing"


def test_the_dataset_defaults_to_the_configs_first_test_set(
    visualize_json_results, tiny_shapes, tmp_path
) -> None:
    write_results(tiny_shapes, tmp_path / "results.json")
    argv = ["--input", str(tmp_path / "results.json"), "--output", str(tmp_path / "out")]
    argv += ["--config-file", str(CONFIG), "DATASETS.TEST", f"[{tiny_shapes.name}]"]
    assert visualize_json_results.main(argv) == 0
    assert len(list((tmp_path / "out").iterdir())) == len(DatasetCatalog.get(tiny_shapes.name))
