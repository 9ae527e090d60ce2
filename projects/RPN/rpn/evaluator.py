"""The ``proposal_recall`` evaluator (``TEST.EVALUATORS: [proposal_recall]``): COCO's average
recall of a proposal network's outputs, and of any proposal file (selective search's too), by
the same code (:func:`rpn.recall.proposal_recall`).

Ground truth is the dataset's records: boxes as the loader keeps them (absolute XYXY), crowd
boxes (``iscrowd``) ignored, categories not looked at. The area that puts a box in a size
range is COCO's: with a COCO file behind the dataset (its metadata's ``json_file``), the
file's ``area`` field of the annotation with the record's ``id`` (for COCO the segment's area,
which the box cannot give; a missing one the file box's ``w * h``, as
:class:`detkit.evaluation.COCOEvaluator` fills it), else the box's ``(x2 - x1) * (y2 - y1)``
(detkit's :func:`~detkit.evaluation.convert_to_coco_dict`). So the numbers are those of
``COCOeval`` (``useCats=0``) on what the COCO evaluator scores against; VOC's ``difficult``
boxes count, as they do there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from detkit.data import DatasetCatalog, MetadataCatalog, load_proposals
from detkit.data.datasets.coco import read_coco_file
from detkit.data.proposal_pairing import PairingReport, cleaned_proposals
from detkit.evaluation import EVALUATOR_REGISTRY, DatasetEvaluator
from detkit.utils import comm

from .proposal_network import output_proposals
from .recall import DEFAULT_MAX_DETS, ImageGroundTruth, ImageProposals, proposal_recall

logger = logging.getLogger("detkit.evaluation")

TASK = "box_proposals"


def records_ground_truth(
    records: Sequence[dict], json_file: str | Path | None = None
) -> list[ImageGroundTruth]:
    """The ground truth of each record, by the module's rules: areas from the COCO file
    ``json_file`` when given (an annotation id it lacks is an error), else the boxes'.
    Boxes are ordered by category as ``COCOeval`` orders them (it decides ties in IoU)."""
    file_areas = _file_areas(json_file) if json_file is not None else None
    truth = []
    for record in records:
        annotations = sorted(record.get("annotations", []), key=lambda a: a["category_id"])
        boxes = np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4)
        if file_areas is None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        else:
            areas = np.array([_file_area(file_areas, a, json_file) for a in annotations])
        crowd = np.array([int(a.get("iscrowd", 0)) for a in annotations], np.int64)
        truth.append(ImageGroundTruth(boxes, crowd, areas.reshape(-1)))
    return truth


def dataset_ground_truth(dataset_name: str) -> tuple[list[dict], list[ImageGroundTruth]]:
    """A registered dataset's records and their ground truth (:func:`records_ground_truth`,
    with the metadata's ``json_file`` when that file exists)."""
    records = DatasetCatalog.get(dataset_name)
    json_file = MetadataCatalog.get(dataset_name).get("json_file")
    if json_file is not None and not Path(json_file).is_file():
        json_file = None  # as the COCO evaluator falls back on the records
    return records, records_ground_truth(records, json_file)


def _file_areas(json_file: str | Path) -> dict:
    """``{annotation id: area}`` of a COCO file; a missing ``area`` is the box's ``w * h``."""
    areas = {}
    for annotation in read_coco_file(json_file)["annotations"]:
        if "area" in annotation:
            areas[annotation.get("id")] = float(annotation["area"])
        else:
            _, _, width, height = annotation["bbox"]
            areas[annotation.get("id")] = float(width) * float(height)
    return areas


def _file_area(areas: dict, annotation: dict, json_file: str | Path) -> float:
    if annotation.get("id") not in areas:
        raise ValueError(
            f"proposal recall: a box of the dataset has annotation id {annotation.get('id')!r}, "
            f"which {json_file} (the dataset's json_file) does not have; are they the same "
            "annotations?"
        )
    return areas[annotation["id"]]


def proposal_file_recall(
    dataset: str | Sequence[dict],
    proposals_path: str | Path,
    loader: str = "auto",
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    by_iou: bool = False,
) -> dict[str, float]:
    """AR (:func:`rpn.recall.proposal_recall`, percent) of the proposal file
    ``proposals_path`` on ``dataset``, a registered name or the records themselves (then the
    areas are the boxes'). ``by_iou``: also the recall at each IoU threshold
    (:func:`rpn.recall.proposal_recall`).

    The file is read with detkit's ``loader`` (:func:`detkit.data.load_proposals`) and paired
    with the images as training and testing pair it (:mod:`detkit.data.proposal_pairing`: by
    image id or file-name stem; boxes clipped to the image; boxes without area after that or
    not finite dropped, with a warning; ordered by objectness, ties in the file's order), but
    nothing is selected: no ``min_size``, no top-k. COCO clips nothing; clipping here puts a
    file on the footing of a proposal network, whose boxes are clipped to the image already,
    and of the detector, which pools only the clipped box. A box's part outside the image covers
    no object, yet unclipped it lowers the box's IoU. An image the file lacks has no proposals:
    its boxes count as missed (with a warning).
    """
    if isinstance(dataset, str):
        records, truth = dataset_ground_truth(dataset)
    else:
        records, truth = dataset, records_ground_truth(dataset)
    proposals = load_proposals(proposals_path, loader, records)
    report = PairingReport(str(proposals_path))
    found = []
    for chunk in cleaned_proposals(records, proposals, report):
        ends = np.cumsum(chunk.counts)
        for end, count in zip(ends.tolist(), chunk.counts.tolist(), strict=True):
            found.append(
                ImageProposals(chunk.boxes[end - count : end], chunk.logits[end - count : end])
            )
    report.check()
    for line in report.warnings():
        logger.warning(line)
    return proposal_recall(truth, found, max_dets, by_iou)


@EVALUATOR_REGISTRY.register(name="proposal_recall")
class ProposalRecallEvaluator(DatasetEvaluator):
    """AR@100, AR@1000 and by area (:func:`rpn.recall.proposal_recall`, percent) of a proposal
    network's outputs, ``{"box_proposals": {...}}``.

    The model's output per image is ``{"proposals": Instances(proposal_boxes=Boxes,
    objectness_logits)}``, boxes absolute XYXY in the original image's pixels, scored as given
    (not clipped: a proposal network clips its own). Each image's best ``max(max_dets)`` are kept
    as they come (all that AR looks at). Every image of the dataset counts: one the model was
    not run on has no proposals. With ``distributed`` the main process gathers every process's
    proposals and evaluates them all; the others return ``{}``.
    """

    def __init__(
        self,
        dataset_name: str,
        max_dets: Sequence[int] = DEFAULT_MAX_DETS,
        distributed: bool = True,
    ) -> None:
        self.dataset_name = dataset_name
        self.max_dets = tuple(sorted(max_dets))
        self.distributed = distributed
        self._proposals: list[tuple[str, np.ndarray, np.ndarray]] = []

    @classmethod
    def from_config(
        cls, cfg: DictConfig, dataset_name: str, output_folder: str | Path
    ) -> ProposalRecallEvaluator:
        """COCO's AR@100 and AR@1000 on ``dataset_name``; nothing is written to the folder."""
        return cls(dataset_name)

    def reset(self) -> None:
        self._proposals = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(inputs, outputs, strict=True):
            boxes, logits = output_proposals("ProposalRecallEvaluator", image, output)
            best = np.argsort(-logits, kind="stable")[: self.max_dets[-1]]
            self._proposals.append((str(image["image_id"]), boxes[best], logits[best]))

    def evaluate(self) -> dict:
        proposals = self._proposals
        if self.distributed:
            gathered = comm.gather(proposals)
            if not comm.is_main_process():
                return {}
            proposals = [p for part in gathered for p in part]
        records, truth = dataset_ground_truth(self.dataset_name)
        by_image = {}
        for image_id, boxes, logits in proposals:
            if image_id in by_image:
                raise ValueError(
                    f"ProposalRecallEvaluator: image {image_id!r} of {self.dataset_name!r} was "
                    "processed twice"
                )
            by_image[image_id] = ImageProposals(boxes, logits)
        ids = [str(r["image_id"]) for r in records]
        unknown = by_image.keys() - set(ids)
        if unknown:
            raise ValueError(
                f"ProposalRecallEvaluator: proposals for images not in {self.dataset_name!r}: "
                f"{sorted(unknown)[:5]}"
            )
        if len(by_image) < len(ids):
            logger.warning(
                f"ProposalRecallEvaluator: {len(ids) - len(by_image)} of the {len(ids)} images "
                f"of {self.dataset_name!r} have no proposals; their boxes count as missed"
            )
        none = ImageProposals(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        found = [by_image.get(i, none) for i in ids]
        return {TASK: proposal_recall(truth, found, self.max_dets)}
