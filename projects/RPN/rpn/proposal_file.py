"""Writing a proposal network's outputs over a dataset as a proposal file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from detkit.data.proposals import write_detectron2_pickle
from detkit.evaluation import DatasetEvaluator
from detkit.utils import comm

from .proposal_network import output_proposals


class ProposalFileWriter(DatasetEvaluator):
    """An evaluator that keeps each image's ``"proposals"`` output (boxes in the original
    image's pixels and objectness logits, best first) and, after the last image, writes them to
    ``path`` in detectron2's pickle layout, in the order of ``image_ids`` (the dataset's), so the
    file reads back in Fast R-CNN by image id as any other proposal file. In a distributed run
    the main process gathers every process's share and writes the file; an image of
    ``image_ids`` without proposals is an error, not a file with a hole."""

    def __init__(self, path: str | Path, image_ids: Sequence) -> None:
        self.path = Path(path)
        self.image_ids = list(image_ids)
        self._found: dict = {}

    def reset(self) -> None:
        self._found = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(inputs, outputs, strict=True):
            self._found[image["image_id"]] = output_proposals("ProposalFileWriter", image, output)

    def evaluate(self) -> dict:
        found = {}
        for part in comm.gather(self._found):
            found.update(part)
        if not comm.is_main_process():
            return {}
        missing = [i for i in self.image_ids if i not in found]
        if missing:
            raise RuntimeError(
                f"ProposalFileWriter: no proposals for {len(missing)} of the "
                f"{len(self.image_ids)} images (first: {missing[:3]}); {self.path} not written"
            )
        write_detectron2_pickle(
            self.path,
            self.image_ids,
            [found[i][0] for i in self.image_ids],
            [found[i][1] for i in self.image_ids],
        )
        return {}
