"""Proposals: a file whose boxes fit the images only in another order is refused, with the fix.

Given the dataset, the `detectron2_pickle` and `fast_rcnn_mat` loaders read every box of the file
as the file says — `(x1, y1, x2, y2)` for `bbox_mode` 0, `(x, y, w, h)` for 1, `(y1, x1, y2, x2)`
for a `.mat` — and as the other two orders. A box fits its image when it is finite, not
inverted, and passes the border by at most 5% of the side. When fewer than 90% of the file's
boxes fit as it says, it is refused: naming the order they do fit in (90% or more) and the fix
(`set bbox_mode 1`, reorder the rows, …), or saying that no order fits (other images, another
scale). On square images a swap of x and y cannot be seen. A file that is not a pickle (or not a
`.mat`), an image given twice, lists or boxes and logits of different lengths are refused naming
the file and the image. Attaching drops and counts the proposals that are not finite, have no
area or lie outside their image, and refuses an image whose every proposal is so.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from detkit.data import (
    DatasetCatalog,
    attach_proposals,
    get_detection_dataset_dicts,
    load_proposals,
)
from detkit.data.proposals import ProposalFileError


def records(count: int = 20, width: int = 200, height: int = 100) -> list[dict]:
    """``count`` landscape images (200x100 unless told)."""
    return [
        {
            "file_name": f"/x/{i:04d}.jpg",
            "image_id": i,
            "height": height,
            "width": width,
            "annotations": [],
        }
        for i in range(count)
    ]


def xyxy_boxes(
    seed: int = 0, count: int = 20, width: int = 200, height: int = 100
) -> list[np.ndarray]:
    """Per image 50 random XYXY boxes inside a ``width`` x ``height`` image."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        x1, y1 = rng.uniform(0, [width - 20, height - 20], (50, 2)).T
        x2 = rng.uniform(x1 + 10, width)
        y2 = rng.uniform(y1 + 10, height)
        boxes.append(np.stack([x1, y1, x2, y2], 1).astype(np.float32))
    return boxes


def write_pickle(
    path: Path, boxes: list, bbox_mode: int = 0, ids: list | None = None, **extra
) -> Path:
    data = {
        "ids": list(range(len(boxes))) if ids is None else ids,
        "boxes": boxes,
        "bbox_mode": bbox_mode,
        **extra,
    }
    with open(path, "wb") as file:
        pickle.dump(data, file)
    return path


def test_legitimate_xyxy_file_loads(tmp_path: Path) -> None:
    """A real XYXY file, some boxes a few px out → loaded, clipped to the image."""
    boxes = xyxy_boxes()
    boxes[0][0] = [-3, -2, 203, 101]
    path = write_pickle(tmp_path / "p.pkl", boxes)
    dicts = attach_proposals(records(), load_proposals(path, "auto", records()), "p.pkl")
    assert dicts[0]["proposal_boxes"].shape == (50, 4)
    assert [0, 0, 200, 100] in dicts[0]["proposal_boxes"].tolist()


def test_file_pickled_with_the_highest_protocol_loads(tmp_path: Path) -> None:
    """A proposal pickle written with `pickle.HIGHEST_PROTOCOL` (protocol 5, arrays rebuilt from
    their buffer) → loaded as any other; the restricted unpickler still builds arrays only."""
    boxes = xyxy_boxes()
    path = tmp_path / "p5.pkl"
    with open(path, "wb") as file:
        pickle.dump({"ids": list(range(20)), "boxes": boxes}, file, protocol=5)
    dicts = attach_proposals(records(), load_proposals(path, "auto", records()), "p5.pkl")
    np.testing.assert_array_equal(dicts[3]["proposal_boxes"], boxes[3])


def test_y1x1y2x2_file_is_refused(tmp_path: Path) -> None:
    """(y1, x1, y2, x2) boxes in an XYXY file → refused, naming how to reorder."""
    swapped = [b[:, [1, 0, 3, 2]] for b in xyxy_boxes()]
    path = write_pickle(tmp_path / "yx.pkl", swapped)
    with pytest.raises(
        ProposalFileError,
        match=r"yx\.pkl: the boxes look like \(y1, x1, y2, x2\), not \(x1, y1, x2, y2\) "
        r".* reorder each row to \(x1, y1, x2, y2\)",
    ):
        load_proposals(path, "auto", records())


def test_xywh_file_saying_xyxy_is_refused(tmp_path: Path) -> None:
    """(x, y, w, h) boxes with bbox_mode 0 → refused: set bbox_mode 1."""
    xywh = [np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1) for b in xyxy_boxes()]
    path = write_pickle(tmp_path / "wh.pkl", xywh)
    with pytest.raises(
        ProposalFileError,
        match=r"look like \(x, y, w, h\), not \(x1, y1, x2, y2\)"
        r".*set bbox_mode 1 \(XYWH_ABS\) in the file",
    ):
        load_proposals(path, "auto", records())


def test_xyxy_file_saying_xywh_is_refused(tmp_path: Path) -> None:
    """XYXY boxes with bbox_mode 1 → refused: set bbox_mode 0."""
    path = write_pickle(tmp_path / "p.pkl", xyxy_boxes(), bbox_mode=1)
    with pytest.raises(
        ProposalFileError,
        match=r"look like \(x1, y1, x2, y2\), not \(x, y, w, h\).*set bbox_mode 0",
    ):
        load_proposals(path, "auto", records())


def test_legitimate_xywh_file_loads(tmp_path: Path) -> None:
    """A real XYWH file with bbox_mode 1 → loaded, converted to XYXY."""
    boxes = xyxy_boxes()
    xywh = [np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1) for b in boxes]
    proposals = load_proposals(
        write_pickle(tmp_path / "p.pkl", xywh, bbox_mode=1), "auto", records()
    )
    np.testing.assert_allclose(proposals["3"][0], boxes[3], atol=1e-4)


def test_portrait_images_swapped_order_is_refused(tmp_path: Path) -> None:
    """(y1, x1, y2, x2) boxes on portrait images → refused as well."""
    swapped = [b[:, [1, 0, 3, 2]] for b in xyxy_boxes(width=100, height=200)]
    path = write_pickle(tmp_path / "p.pkl", swapped)
    with pytest.raises(ProposalFileError, match=r"look like \(y1, x1, y2, x2\)"):
        load_proposals(path, "auto", records(width=100, height=200))


def test_swap_through_get_detection_dataset_dicts(tmp_path: Path) -> None:
    """A swapped file for a registered dataset → refused where datasets load."""
    DatasetCatalog.register("reliability_props", records)
    try:
        path = write_pickle(tmp_path / "p.pkl", [b[:, [1, 0, 3, 2]] for b in xyxy_boxes()])
        with pytest.raises(ProposalFileError, match=r"look like \(y1, x1, y2, x2\)"):
            get_detection_dataset_dicts(["reliability_props"], [str(path)])
    finally:
        DatasetCatalog.remove("reliability_props")


def test_mat_file_with_xyxy_rows_is_refused(tmp_path: Path) -> None:
    """A .mat holding (x1, y1, x2, y2) rows → refused, naming its layout."""
    cells = np.empty((1, 20), dtype=object)
    names = np.empty((1, 20), dtype=object)
    for i, boxes in enumerate(xyxy_boxes()):
        cells[0, i], names[0, i] = (boxes + 1).astype(np.float64), f"{i:04d}"
    savemat(tmp_path / "ss.mat", {"boxes": cells, "images": names})
    with pytest.raises(
        ProposalFileError,
        match=r"ss\.mat: the boxes look like \(x1, y1, x2, y2\), not \(y1, x1, y2, x2\)"
        r".*1-based \(y1, x1, y2, x2\) rows",
    ):
        load_proposals(tmp_path / "ss.mat", "auto", records())


def test_proposals_for_images_of_another_size(tmp_path: Path) -> None:
    """Proposals made for images twice as large → refused: no order fits."""
    path = write_pickle(tmp_path / "p.pkl", xyxy_boxes(width=400, height=200))
    with pytest.raises(
        ProposalFileError, match=r"only \d+% of the boxes fit their images .* no other order fits"
    ):
        load_proposals(path, "auto", records())


def test_text_file_as_proposals(tmp_path: Path) -> None:
    """A JSON text file as a proposal pickle → refused, naming the file."""
    (tmp_path / "p.pkl").write_text('{"ids": [1], "boxes": [[0, 0, 5, 5]]}')
    with pytest.raises(ProposalFileError, match=r"p\.pkl: not a proposal pickle"):
        load_proposals(tmp_path / "p.pkl")


def test_empty_proposal_file(tmp_path: Path) -> None:
    """An empty proposal file → refused, naming the file (not a bare EOFError)."""
    (tmp_path / "p.pkl").write_bytes(b"")
    with pytest.raises(ProposalFileError, match=r"p\.pkl: not a proposal pickle \(EOFError"):
        load_proposals(tmp_path / "p.pkl")


def test_pickle_named_mat(tmp_path: Path) -> None:
    """A pickle named .mat → refused as not a MATLAB file, naming it."""
    write_pickle(tmp_path / "p.mat", xyxy_boxes())
    with pytest.raises(ProposalFileError, match=r"p\.mat: not a MATLAB file"):
        load_proposals(tmp_path / "p.mat")


def test_boxes_and_logits_of_different_lengths(tmp_path: Path) -> None:
    """50 boxes but 49 logits for an image → refused, naming file, image, counts."""
    boxes = xyxy_boxes()
    logits = [np.zeros(len(b)) for b in boxes]
    logits[7] = np.zeros(49)
    path = write_pickle(tmp_path / "p.pkl", boxes, objectness_logits=logits)
    with pytest.raises(
        ProposalFileError, match=r"p\.pkl: image '7' has 50 boxes but 49 objectness logits"
    ):
        load_proposals(path)


def test_lists_of_different_lengths(tmp_path: Path) -> None:
    """20 ids but 19 box arrays → refused, giving the three lengths."""
    path = write_pickle(tmp_path / "p.pkl", xyxy_boxes()[:19], ids=list(range(20)))
    with pytest.raises(ProposalFileError, match=r"differ in length \(20, 19 and 20\)"):
        load_proposals(path)


def test_image_given_twice(tmp_path: Path) -> None:
    """A proposal file listing an image twice → refused, naming the image."""
    path = write_pickle(tmp_path / "p.pkl", xyxy_boxes()[:3], ids=[3, 1, 3])
    with pytest.raises(ProposalFileError, match=r"p\.pkl: image 3 is given twice"):
        load_proposals(path)


def test_image_whose_every_proposal_is_invalid(tmp_path: Path) -> None:
    """An image whose every proposal is NaN or outside → refused, naming it."""
    boxes = xyxy_boxes()
    boxes[5] = np.array([[np.nan, 0, 10, 10], [300, 10, 350, 40], [20, 20, 10, 30]], np.float32)
    proposals = load_proposals(write_pickle(tmp_path / "p.pkl", boxes), "auto", records())
    with pytest.raises(
        ProposalFileError, match=r"p\.pkl: every proposal of 1 images is invalid .* image '5'"
    ):
        attach_proposals(records(), proposals, "p.pkl")


def test_invalid_proposals_are_dropped_and_counted(tmp_path: Path, caplog) -> None:
    """An infinite box and a NaN logit → dropped and counted, not clipped."""
    boxes = xyxy_boxes()
    boxes[2][0] = [0, 0, np.inf, np.inf]
    logits = [np.zeros(len(b), np.float32) for b in boxes]
    logits[2][1] = np.nan
    path = write_pickle(tmp_path / "p.pkl", boxes, objectness_logits=logits)
    with caplog.at_level(logging.WARNING):
        dicts = attach_proposals(records(), load_proposals(path, "auto", records()), "p.pkl")
    assert len(dicts[2]["proposal_boxes"]) == 48
    assert [0, 0, 200, 100] not in dicts[2]["proposal_boxes"].tolist()
    assert "dropped 2 invalid proposals" in caplog.text and "image '2'" in caplog.text


def test_tiny_run_proposals_pass_the_order_check(tiny_run, tmp_path: Path) -> None:
    """The suite's jittered shapes_val proposals → pass the order check."""
    from detkit.data import load_coco_json

    folder = tiny_run.root / "shapes" / "val"
    dicts = load_coco_json(folder / "annotations.json", folder)
    proposals = load_proposals(tiny_run.proposals, "auto", dicts)
    assert len(proposals) == len(dicts)
