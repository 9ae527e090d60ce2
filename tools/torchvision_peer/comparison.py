"""What the benchmark gives both models and how it checks they do the same work: random
images with proposals, a calibration that makes random weights behave as trained ones, and
the comparison of two detection sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detkit.export import random_boxes
from detkit.structures import Boxes, Instances

GT_PER_IMAGE = 5
LOGIT_STD = 2.0  # spread of each class logit over the RoIs after calibration


@dataclass
class Sample:
    """One benchmark image: uint8 ``image [3, H, W]``, ``proposals [P, 4]``, ground truth."""

    image: Tensor
    proposals: Tensor
    gt_boxes: Tensor
    gt_classes: Tensor


def make_sample(height: int, width: int, num_proposals: int, num_classes: int, seed: int) -> Sample:
    """A random image with ``GT_PER_IMAGE`` objects; a quarter of the proposals are the
    objects' boxes jittered by up to 15 % of their size (so some are foreground in training),
    the rest random boxes."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    gt_boxes = random_boxes(GT_PER_IMAGE, height, width, seed=seed + 1)
    gt_classes = torch.randint(0, num_classes, (GT_PER_IMAGE,), generator=generator)
    jittered_count = num_proposals // 4
    source = gt_boxes[torch.randint(0, GT_PER_IMAGE, (jittered_count,), generator=generator)]
    sizes = (source[:, 2:] - source[:, :2]).repeat(1, 2)
    jitter = (torch.rand(jittered_count, 4, generator=generator) - 0.5) * 0.3 * sizes
    jittered = source + jitter
    jittered[:, 0::2] = jittered[:, 0::2].clamp(0, width - 1)
    jittered[:, 1::2] = jittered[:, 1::2].clamp(0, height - 1)
    jittered[:, 2:] = torch.maximum(jittered[:, 2:], jittered[:, :2] + 1)
    others = random_boxes(num_proposals - jittered_count, height, width, seed=seed + 2)
    return Sample(image, torch.cat([jittered, others]), gt_boxes, gt_classes)


def detkit_inputs(samples: list[Sample], device: torch.device) -> list[dict]:
    inputs = []
    for s in samples:
        size = tuple(s.image.shape[1:])
        proposals = Instances(
            size,
            proposal_boxes=Boxes(s.proposals),
            objectness_logits=torch.zeros(len(s.proposals)),
        )
        instances = Instances(size, gt_boxes=Boxes(s.gt_boxes), gt_classes=s.gt_classes)
        inputs.append({"image": s.image.to(device), "proposals": proposals, "instances": instances})
    return inputs


def peer_inputs(samples: list[Sample], device: torch.device):
    images = [s.image.to(device) for s in samples]
    proposals = [s.proposals.to(device) for s in samples]
    targets = [
        {"boxes": s.gt_boxes.to(device), "labels": (s.gt_classes + 1).to(device)} for s in samples
    ]
    return images, proposals, targets


def distinct_proposals(model: nn.Module, sample: Sample) -> Sample:
    """``sample`` with only the proposals detkit's deduplication keeps, so that both models
    pool the same RoIs."""
    heads = model.roi_heads
    if not heads.dedup_proposals:
        return sample
    keep = heads.distinct_on_grid(sample.proposals)
    return Sample(sample.image, sample.proposals[keep], sample.gt_boxes, sample.gt_classes)


def input_of(module: nn.Module, run: Callable[[], object]) -> Tensor:
    """The first input ``module`` is called with while ``run()`` runs."""
    seen: list[Tensor] = []
    hook = module.register_forward_hook(lambda _, args, output: seen.append(args[0]))
    try:
        run()
    finally:
        hook.remove()
    return seen[0]


@torch.no_grad()
def standardise_outputs(layer: nn.Linear, inputs: Tensor, spread: float) -> None:
    """Scales and shifts ``layer``'s weights so that its outputs on ``inputs`` have, per
    output, zero mean and standard deviation ``spread``."""
    outputs = layer(inputs)
    scale = spread / outputs.std(dim=0).clamp(min=1e-12)
    layer.weight.mul_(scale[:, None])
    if layer.bias is not None:
        layer.bias.sub_(outputs.mean(dim=0)).mul_(scale)


@torch.no_grad()
def calibrate_head(model: nn.Module, inputs: list[dict]) -> None:
    """Calibrates the box head's fc layers and the class scores on these inputs (a
    data-dependent initialisation): each fc layer's outputs get zero mean and unit spread over
    the RoIs, so about half of each layer's units are active and RoIs differ as in a trained
    head, and each class logit gets a spread of ``LOGIT_STD``. Random initial weights give every
    RoI nearly the same features and every class about the same probability, below the score
    threshold: nothing for the post-processing to do, nothing for the equal-work check to
    compare."""
    heads = model.roi_heads
    head = heads.box_head
    pooled = input_of(head, lambda: model.eval()(inputs))
    for name in getattr(head, "fc_names", ()):  # another head has no peer: refused later
        layer = getattr(head, name)
        if isinstance(layer, nn.Linear):  # nor has a factored layer
            standardise_outputs(layer, input_of(layer, lambda: head(pooled)), 1.0)
    cls_score = heads.box_predictor.cls_score
    features = input_of(cls_score, lambda: heads.box_predictor(head(pooled)))
    standardise_outputs(cls_score, features, LOGIT_STD)


def detection_mismatch(
    mine: Instances, theirs: dict[str, Tensor], kept_at_most: int | None = None
) -> str | None:
    """Why two detection sets differ, or ``None`` when each detection of one has its own
    counterpart in the other: the same class, score and box to float tolerance (matched as
    sets, since detections of equal score may come in either order).

    When both sets hold ``kept_at_most`` detections (``TEST.DETECTIONS_PER_IMAGE``: the cut
    was made), detections tied at the lowest kept score are compared by their count per class
    only: which of several equally scored boxes survive the cut is a tie either model may
    break its own way."""
    if len(mine) != len(theirs["scores"]):
        return f"{len(mine)} detections against torchvision's {len(theirs['scores'])}"
    my_scores, my_classes, my_boxes = mine.scores, mine.pred_classes, mine.pred_boxes.tensor
    their_scores, their_classes, their_boxes = (
        theirs["scores"],
        theirs["labels"] - 1,
        theirs["boxes"],
    )
    if kept_at_most is not None and 0 < len(mine) == kept_at_most:
        lowest = torch.minimum(my_scores.min(), their_scores.min())
        my_cut = torch.isclose(my_scores, lowest, rtol=1e-4, atol=1e-6)
        their_cut = torch.isclose(their_scores, lowest, rtol=1e-4, atol=1e-6)
        size = int(max(my_classes.max(), their_classes.max())) + 1
        if not torch.equal(
            torch.bincount(my_classes[my_cut], minlength=size),
            torch.bincount(their_classes[their_cut], minlength=size),
        ):
            return "the detections tied at the lowest kept score differ in their classes"
        my_scores, my_classes, my_boxes = my_scores[~my_cut], my_classes[~my_cut], my_boxes[~my_cut]
        their_scores, their_classes, their_boxes = (
            their_scores[~their_cut],
            their_classes[~their_cut],
            their_boxes[~their_cut],
        )
    same_class = my_classes[:, None] == their_classes[None, :]
    close_score = torch.isclose(my_scores[:, None], their_scores[None, :], rtol=1e-4, atol=1e-6)
    box_error = (my_boxes[:, None] - their_boxes[None, :]).abs().amax(dim=2)
    scale = their_boxes.abs().amax(dim=1).clamp(min=1.0)[None, :]
    candidates = same_class & close_score & (box_error <= 1e-2 + 1e-4 * scale)
    taken = torch.zeros(len(their_scores), dtype=torch.bool)
    for row in candidates:
        free = torch.nonzero(row & ~taken).flatten()
        if free.numel() == 0:
            return "some detections have no counterpart of the same class, score and box"
        taken[free[0]] = True
    return None
