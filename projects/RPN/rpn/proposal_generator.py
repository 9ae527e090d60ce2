"""The region proposal network (Ren et al., NeurIPS 2015) over a backbone's feature maps.

torchvision gives the anchors (``AnchorGenerator``'s cell anchors and grid) and the head
(``RPNHead``: a shared 3x3 conv, then a 1x1 objectness logit and four box deltas per anchor).
What is written here, and why not torchvision's ``RegionProposalNetwork``:

- anchors are laid on each map at the stride its backbone declares (``ShapeSpec``); torchvision
  divides the padded image size by the map size, which is wrong for a map of odd size made by a
  stride-2 pool (an FPN's ``p6``);
- matching uses detkit's ``Matcher`` bands plus each ground-truth box's best anchors, and the
  sampled anchors are drawn by detkit's ``FastRCNNSampler`` from the step's generator (seeded
  per step, so resume is exact), not from the global random state;
- the proposals keep their objectness *logits*, which a proposal file stores and Fast R-CNN
  ranks by; torchvision returns sigmoid probabilities, which round to 1.0 in float32 for logits
  above ~17 and so lose the order of the best proposals;
- the losses are normalised as detectron2's (sum over the sampled anchors divided by
  ``batch_size_per_image x images``) with its smooth-L1 ``beta`` (0: L1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import batched_nms, box_iou

from detkit.modeling import Box2BoxTransform, FastRCNNSampler, Matcher, ShapeSpec
from detkit.modeling.sampling import sampling_generator
from detkit.structures import Boxes, Instances

ANCHOR_KEYS = ("MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
SELECTION_KEYS = (
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "MODEL.RPN.NMS_THRESH",
)


def anchor_problems(
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
    num_maps: int,
    names: tuple[str, str] = ANCHOR_KEYS,
) -> list[str]:
    """Why ``sizes`` and ``aspect_ratios`` (each one list for all ``num_maps`` maps or one per
    map) do not give every map the same positive number of anchors, one message per problem
    naming each as ``names`` gives; empty when they do."""
    problems = [
        f"{name}: give one list for all {num_maps} feature maps or one list per map, got "
        f"{len(values)} lists"
        for name, values in zip(names, (sizes, aspect_ratios), strict=True)
        if len(values) not in (1, num_maps)
    ]
    problems += [
        f"{name}: every value must be positive, got {[list(v) for v in values]}"
        for name, values in zip(names, (sizes, aspect_ratios), strict=True)
        if not all(v and min(v) > 0 for v in values)
    ]
    if problems:
        return problems
    per_map_sizes, per_map_ratios = per_map(sizes, num_maps), per_map(aspect_ratios, num_maps)
    counts = {len(s) * len(a) for s, a in zip(per_map_sizes, per_map_ratios, strict=True)}
    if len(counts) != 1:
        problems.append(
            f"{names[0]} and {names[1]}: every feature map needs the same number of anchors "
            f"(sizes x aspect ratios; one head predicts for all), got {sorted(counts)}"
        )
    return problems


def per_map(values: Sequence[Sequence[float]], num_maps: int) -> list[list[float]]:
    """``values`` as one list per map: a single list serves every map."""
    if len(values) == num_maps:
        return [list(v) for v in values]
    return [list(values[0])] * num_maps


def selection_problems(
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
    names: tuple[str, str, str] = ("pre_nms_topk", "post_nms_topk", "nms_thresh"),
) -> list[str]:
    """Why the test-time selection cannot run with these settings (named as ``names``)."""
    problems = [
        f"{name} must be at least 1, got {value}"
        for name, value in zip(names[:2], (pre_nms_topk, post_nms_topk), strict=True)
        if value < 1
    ]
    if not 0.0 <= nms_thresh <= 1.0:
        problems.append(f"{names[2]} must be in [0, 1], got {nms_thresh}")
    return problems


def build_anchor_generator(
    sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]], num_maps: int
) -> AnchorGenerator:
    """torchvision's ``AnchorGenerator`` with ``sizes[i] x aspect_ratios[i]`` anchors on map
    ``i`` (:func:`anchor_problems` says what it refuses)."""
    problems = anchor_problems(sizes, aspect_ratios, num_maps)
    if problems:
        raise ValueError("; ".join(problems))
    return AnchorGenerator(
        tuple(map(tuple, per_map(sizes, num_maps))),
        tuple(map(tuple, per_map(aspect_ratios, num_maps))),
    )


class RPN(nn.Module):
    """Objectness and box deltas for every anchor of the ``in_features`` maps.

    In training, ``forward`` returns the losses ``loss_rpn_cls`` (binary cross-entropy) and
    ``loss_rpn_loc`` (smooth-L1 of the deltas of object anchors) over ``batch_size_per_image``
    anchors sampled per image; at test time one ``Instances(proposal_boxes, objectness_logits)``
    per image: the ``pre_nms_topk`` best anchors of each map decoded, clipped to the image,
    boxes with a side of at most ``min_size`` dropped, NMS at ``nms_thresh`` within each map,
    then the ``post_nms_topk`` best of all maps, best first. A non-finite logit or box is an
    error (broken weights), never a proposal quietly left out.
    """

    def __init__(
        self,
        in_features: Sequence[str],
        strides: Sequence[int],
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        matcher: Matcher,
        sampler: FastRCNNSampler,
        box2box_transform: Box2BoxTransform,
        pre_nms_topk: int,
        post_nms_topk: int,
        nms_thresh: float = 0.7,
        min_size: float = 0.0,
        smooth_l1_beta: float = 0.0,
        loss_weight: float = 1.0,
        box_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if len(strides) != len(in_features):
            raise ValueError(f"RPN: one stride per feature map needed, got {strides}")
        problems = selection_problems(pre_nms_topk, post_nms_topk, nms_thresh)
        if problems:
            raise ValueError("RPN: " + "; ".join(problems))
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.anchor_generator = anchor_generator
        self.head = head
        self.matcher = matcher
        self.sampler = sampler
        self.box2box_transform = box2box_transform
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight
        self.box_loss_weight = box_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> RPN:
        spec = cfg.MODEL.RPN
        missing = [name for name in spec.IN_FEATURES if name not in input_shape]
        if missing or not spec.IN_FEATURES:
            raise ValueError(
                f"MODEL.RPN.IN_FEATURES={list(spec.IN_FEATURES)}: must name some of the "
                f"backbone's maps {sorted(input_shape)}"
            )
        shapes = [input_shape[name] for name in spec.IN_FEATURES]
        if len({shape.channels for shape in shapes}) != 1:
            raise ValueError(
                f"MODEL.RPN.IN_FEATURES={list(spec.IN_FEATURES)}: the maps have different "
                f"channel counts {[s.channels for s in shapes]}; one head runs on all of them"
            )
        anchors = build_anchor_generator(
            cfg.MODEL.ANCHOR_GENERATOR.SIZES, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS, len(shapes)
        )
        return cls(
            spec.IN_FEATURES,
            [shape.stride for shape in shapes],
            anchors,
            RPNHead(shapes[0].channels, anchors.num_anchors_per_location()[0]),
            Matcher(spec.IOU_THRESHOLDS, spec.IOU_LABELS),
            FastRCNNSampler(spec.BATCH_SIZE_PER_IMAGE, spec.POSITIVE_FRACTION),
            Box2BoxTransform(spec.BBOX_REG_WEIGHTS),
            pre_nms_topk=spec.PRE_NMS_TOPK_TEST,
            post_nms_topk=spec.POST_NMS_TOPK_TEST,
            nms_thresh=spec.NMS_THRESH,
            min_size=spec.MIN_SIZE,
            smooth_l1_beta=spec.SMOOTH_L1_BETA,
            loss_weight=spec.LOSS_WEIGHT,
            box_loss_weight=spec.BBOX_REG_LOSS_WEIGHT,
        )

    def forward(
        self,
        image_sizes: Sequence[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Instances] | None = None,
    ) -> dict[str, Tensor] | list[Instances]:
        """Losses against ``targets`` (``gt_boxes`` of each image) in training; the proposals of
        the images (each ``image_sizes[i]``, the size before padding) otherwise."""
        maps = [features[name] for name in self.in_features]
        logits, deltas = self.head(maps)
        # [N, A, H, W] and [N, 4A, H, W] -> [N, H*W*A] and [N, H*W*A, 4]: the anchors' order
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [
            d.view(d.shape[0], -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, 3)
            for d in deltas
        ]
        anchors = self.anchors(maps)
        if self.training:
            if targets is None:
                raise ValueError("RPN: training needs the images' ground truth (targets)")
            return self.losses(anchors, torch.cat(logits, 1), torch.cat(deltas, 1), targets)
        return self.proposals(anchors, logits, deltas, image_sizes)

    def anchors(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """``[H*W*A, 4]`` anchors of each map, at its stride, in the head's output order."""
        generator = self.anchor_generator
        generator.set_cell_anchors(maps[0].dtype, maps[0].device)
        strides = [[torch.tensor(s), torch.tensor(s)] for s in self.strides]
        return generator.grid_anchors([list(m.shape[-2:]) for m in maps], strides)

    def label_anchors(self, anchors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Each anchor's matched ground-truth index and label (1 object, 0 background, -1
        ignored): the matcher's bands, and besides, for each box, the anchors of its highest IoU
        are objects (so every box has one, however small)."""
        iou = box_iou(gt_boxes, anchors)
        matches, labels = self.matcher(iou)
        if len(gt_boxes):
            best = iou.max(dim=1, keepdim=True).values
            labels[((iou == best) & (best > 0)).any(dim=0)] = 1
        return matches, labels

    def losses(
        self, anchors: list[Tensor], logits: Tensor, deltas: Tensor, targets: Sequence[Instances]
    ) -> dict[str, Tensor]:
        anchors = torch.cat(anchors)
        generator = sampling_generator()
        cls_losses, box_losses = [], []
        for image_logits, image_deltas, target in zip(logits, deltas, targets, strict=True):
            gt_boxes = target.gt_boxes.tensor.to(anchors.device)
            matches, labels = self.label_anchors(anchors, gt_boxes)
            objects, background = self.sampler.sample_labels(labels, generator)
            sampled = torch.cat([objects, background])
            target_logits = torch.zeros_like(image_logits[sampled])
            target_logits[: len(objects)] = 1.0
            cls_losses.append(
                functional.binary_cross_entropy_with_logits(
                    image_logits[sampled], target_logits, reduction="sum"
                )
            )
            if len(objects):
                target_deltas = self.box2box_transform.get_deltas(
                    anchors[objects], gt_boxes[matches[objects]]
                )
                box_losses.append(
                    functional.smooth_l1_loss(
                        image_deltas[objects],
                        target_deltas,
                        beta=self.smooth_l1_beta,
                        reduction="sum",
                    )
                )
        normaliser = self.sampler.batch_size_per_image * len(targets)
        box_loss = torch.stack(box_losses).sum() if box_losses else deltas.sum() * 0.0
        return {
            "loss_rpn_cls": torch.stack(cls_losses).sum() * (self.loss_weight / normaliser),
            "loss_rpn_loc": box_loss * (self.loss_weight * self.box_loss_weight / normaliser),
        }

    @torch.no_grad()
    def proposals(
        self,
        anchors: list[Tensor],
        logits: list[Tensor],
        deltas: list[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        results = []
        for index, size in enumerate(image_sizes):
            boxes, scores, levels = [], [], []
            for level, (map_anchors, map_logits, map_deltas) in enumerate(
                zip(anchors, logits, deltas, strict=True)
            ):
                top = map_logits[index].topk(min(self.pre_nms_topk, len(map_anchors))).indices
                boxes.append(
                    self.box2box_transform.apply_deltas(map_deltas[index][top], map_anchors[top])
                )
                scores.append(map_logits[index][top])
                levels.append(torch.full_like(top, level))
            proposals, score, level = Boxes(torch.cat(boxes)), torch.cat(scores), torch.cat(levels)
            if not (torch.isfinite(proposals.tensor).all() and torch.isfinite(score).all()):
                raise FloatingPointError(
                    f"RPN: non-finite objectness or boxes for image {index} of the batch; the "
                    "weights are broken (did training diverge?)"
                )
            proposals.clip(size)
            keep = proposals.nonempty(self.min_size)
            proposals, score, level = proposals[keep], score[keep], level[keep]
            keep = batched_nms(proposals.tensor, score, level, self.nms_thresh)
            keep = keep[: self.post_nms_topk]  # batched_nms orders by score, best first
            results.append(
                Instances(size, proposal_boxes=proposals[keep], objectness_logits=score[keep])
            )
        return results
