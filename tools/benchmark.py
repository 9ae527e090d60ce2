"""Times a detkit detector end to end against the same Fast R-CNN assembled from torchvision.

    python tools/benchmark.py --config-file configs/PascalVOC/fast_rcnn_VGG16.yaml \\
        [--device cpu|cuda] [--image-size 600 1000] [--num-proposals 2000] \\
        [--svd-ranks 1024 256] [--repeat 5] [--json FILE] [KEY=VALUE ...]

Both models get the same random image and proposals (random boxes, a quarter of them jittered
copies of 5 random ground-truth boxes per image) and the same weights: the peer shares
detkit's trunk (a copy of its backbone, run in NCHW as torchvision's detection models run) and
gets detkit's fc layers and predictor copied into torchvision's ``RoIHeads`` with
``TwoMLPHead`` and ``FastRCNNPredictor`` of the same width, pooling with ``ops.roi_pool``,
``ops.roi_align`` or ``ops.MultiScaleRoIAlign`` as the config's pooler does, with the config's
sampling sizes, box-regression weights and test thresholds. The weights are random (the
config's MODEL.WEIGHTS is not read), then calibrated on the benchmark image as a trained
model's behave: each fc layer of the box head gets outputs of zero mean and unit spread over
the RoIs, and each class logit a spread of 2, so that RoIs differ in features and scores and
the post-processing has real work (untouched random weights give every RoI nearly the same
features, and every class the same score, below the threshold).

Before timing, both models detect on the image and must give the same detections, and at least
one (exit status 1 otherwise: equal work is what makes the ratio mean something, and a check of
no detection checks nothing). Then, in alternation and in the same run, it times inference on
one image and a training iteration (forward, backward and an SGD step on two images), reports
the median of ``--repeat`` runs, detkit's time split into backbone / pooling / box head / the
rest (image normalisation, deduplication, predictor and post-processing), with and without
truncated SVD of the fc layers (``--svd-ranks``, factored from the same weights as
tools/compress_fc.py does), and the peak memory of each. It prints one table with the ratios to
the peer and, with ``--json``, writes every figure. Each phase is logged on stderr, the timed
ones with a progress bar and the time they have left.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool
from torchvision.ops.poolers import LevelMapper
from tqdm import tqdm

from detkit.config import ConfigError, load_config
from detkit.engine import parse_overrides
from detkit.export import random_boxes
from detkit.modeling import build_model
from detkit.modeling.roi_heads.box_head import svd_ranks_by_layer
from detkit.modeling.roi_heads.svd import compress_fc_layers
from detkit.structures import Boxes, Instances
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.timing import clock, describe_machine, peak_memory_mb
from detkit.utils.tool_help import tool_description

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


class SingleMapPooler(nn.Module):
    """torchvision's ``roi_pool`` or ``roi_align`` over one named map, in ``RoIHeads``'
    ``box_roi_pool`` interface ``(features, proposals, image_shapes)``."""

    def __init__(self, name: str, op: Callable[..., Tensor]) -> None:
        super().__init__()
        self.name = name
        self.op = op

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> Tensor:
        return self.op(features[self.name], proposals)


class AlignedMultiScaleRoIAlign(nn.Module):
    """``roi_align(aligned=True)`` per level, levels by torchvision's ``LevelMapper``: what
    ``MultiScaleRoIAlign`` does, with the half-pixel offset it lacks."""

    def __init__(self, names: list[str], scales: list[float], output_size, sampling_ratio: int):
        super().__init__()
        self.names, self.scales = names, scales
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        levels = [round(-torch.log2(torch.tensor(s)).item()) for s in scales]
        self.mapper = LevelMapper(levels[0], levels[-1])

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> Tensor:
        levels = self.mapper(proposals)
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(proposals)]
        )
        first = features[self.names[0]]
        output = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (name, scale) in enumerate(zip(self.names, self.scales, strict=True)):
            index = torch.nonzero(levels == level).flatten()
            output[index] = roi_align(
                features[name],
                rois[index],
                self.output_size,
                scale,
                self.sampling_ratio,
                aligned=True,
            )
        return output


class TorchvisionFastRCNN(nn.Module):
    """Fast R-CNN from torchvision's parts: a backbone returning named maps, then ``RoIHeads``.
    Images are normalised and padded as detkit does; labels are 1..K (0 is background)."""

    def __init__(self, backbone: nn.Module, roi_heads: RoIHeads, mean: Tensor, std: Tensor):
        super().__init__()
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", mean.clone())
        self.register_buffer("pixel_std", std.clone())

    def forward(self, images: list[Tensor], proposals: list[Tensor], targets=None):
        normalised = [(image.float() - self.pixel_mean) / self.pixel_std for image in images]
        divisor = max(getattr(self.backbone, "size_divisibility", 0), 1)
        height = -(-max(i.shape[1] for i in normalised) // divisor) * divisor
        width = -(-max(i.shape[2] for i in normalised) // divisor) * divisor
        batch = normalised[0].new_zeros((len(images), 3, height, width))
        for slot, image in zip(batch, normalised, strict=True):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        features = OrderedDict(self.backbone(batch))
        sizes = [tuple(image.shape[1:]) for image in images]
        detections, losses = self.roi_heads(features, proposals, sizes, targets)
        return losses if self.training else detections


def peer_pooler(cfg, heads) -> nn.Module:
    """torchvision's pooling matching ``heads.pooler`` (detkit's)."""
    box = cfg.MODEL.ROI_BOX_HEAD
    names, scales = heads.in_features, list(heads.pooler.scales)
    size, ratio = heads.pooler.output_size, box.POOLER_SAMPLING_RATIO
    kind = box.POOLER_TYPE
    if kind not in ("ROIPool", "ROIAlign", "ROIAlignV2"):
        raise ValueError(f"no torchvision counterpart of POOLER_TYPE {kind!r}")
    if len(names) == 1:
        scale = scales[0]
        if kind == "ROIPool":
            return SingleMapPooler(names[0], lambda x, b: roi_pool(x, b, size, scale))
        aligned = kind == "ROIAlignV2"
        return SingleMapPooler(
            names[0], lambda x, b: roi_align(x, b, size, scale, ratio, aligned=aligned)
        )
    if kind == "ROIAlign":
        return MultiScaleRoIAlign(names, size, ratio)
    if kind == "ROIAlignV2":
        return AlignedMultiScaleRoIAlign(names, scales, size, ratio)
    raise ValueError("torchvision pools several maps with RoIAlign only, not ROIPool")


def build_peer(cfg, model: nn.Module) -> TorchvisionFastRCNN:
    """The torchvision-built counterpart of ``model`` (a detkit FastRCNN with an unfactored
    ``FastRCNNFCHead``), holding copies of its weights."""
    heads, box = model.roi_heads, cfg.MODEL.ROI_BOX_HEAD
    head = heads.box_head
    if box.NAME != "FastRCNNFCHead" or len(head.fc_names) != 2 or head.svd_ranks:
        raise ValueError("the peer is built for an unfactored two-layer FastRCNNFCHead only")
    mlp = TwoMLPHead(head.fc6.in_features, head.output_size)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    predictor = FastRCNNPredictor(head.output_size, num_classes + 1)
    iou = cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS
    roi_heads = RoIHeads(
        peer_pooler(cfg, heads),
        mlp,
        predictor,
        fg_iou_thresh=iou[-1],
        bg_iou_thresh=iou[-1],  # torchvision has no lower background bound (see the docs)
        batch_size_per_image=cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        positive_fraction=cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
    )
    backbone = copy.deepcopy(model.backbone).to(memory_format=torch.contiguous_format)
    peer = TorchvisionFastRCNN(backbone, roi_heads, model.pixel_mean, model.pixel_std)
    copy_head_weights(model, peer)
    return peer.to(model.device)


@torch.no_grad()
def copy_head_weights(model: nn.Module, peer: TorchvisionFastRCNN) -> None:
    """detkit's fc6, fc7 and predictor into the peer: torchvision puts background first in the
    class scores and has a (never used) box for it, detkit puts background last."""
    head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    peer.roi_heads.box_head.fc6.load_state_dict(head.fc6.state_dict())
    peer.roi_heads.box_head.fc7.load_state_dict(head.fc7.state_dict())
    cls_score, bbox_pred = (
        peer.roi_heads.box_predictor.cls_score,
        peer.roi_heads.box_predictor.bbox_pred,
    )
    order = [predictor.num_classes, *range(predictor.num_classes)]
    cls_score.weight.copy_(predictor.cls_score.weight[order])
    cls_score.bias.copy_(predictor.cls_score.bias[order])
    bbox_pred.weight.zero_()
    bbox_pred.bias.zero_()
    bbox_pred.weight[4:].copy_(predictor.bbox_pred.weight)
    bbox_pred.bias[4:].copy_(predictor.bbox_pred.bias)


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


def detection_mismatch(mine: Instances, theirs: dict[str, Tensor]) -> str | None:
    """Why two detection sets differ, or ``None`` when each detection of one has its own
    counterpart in the other: the same class, score and box to float tolerance (matched as
    sets, since detections of equal score may come in either order)."""
    if len(mine) != len(theirs["scores"]):
        return f"{len(mine)} detections against torchvision's {len(theirs['scores'])}"
    same_class = mine.pred_classes[:, None] == (theirs["labels"] - 1)[None, :]
    close_score = torch.isclose(
        mine.scores[:, None], theirs["scores"][None, :], rtol=1e-4, atol=1e-6
    )
    box_error = (mine.pred_boxes.tensor[:, None] - theirs["boxes"][None, :]).abs().amax(dim=2)
    scale = theirs["boxes"].abs().amax(dim=1).clamp(min=1.0)[None, :]
    candidates = same_class & close_score & (box_error <= 1e-2 + 1e-4 * scale)
    taken = torch.zeros(len(mine), dtype=torch.bool)
    for row in candidates:
        free = torch.nonzero(row & ~taken).flatten()
        if free.numel() == 0:
            return "some detections have no counterpart of the same class, score and box"
        taken[free[0]] = True
    return None


class StageTimer:
    """Wall time spent inside each of some modules' forward calls (CUDA synchronised)."""

    def __init__(self, modules: dict[str, nn.Module], device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(modules, 0.0)
        self.handles = []
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(self._starter(name)))
            self.handles.append(module.register_forward_hook(self._stopper(name)))
        self.started: dict[str, float] = {}

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _starter(self, name: str):
        def start(module, args):
            self.started[name] = self._now()

        return start

    def _stopper(self, name: str):
        def stop(module, args, output):
            self.seconds[name] += self._now() - self.started[name]

        return stop

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def log_phase(text: str) -> None:
    """One line on stderr saying what the benchmark does now."""
    tqdm.write(f"benchmark: {text}", file=sys.stderr)


def progress_bar(what: str, total: int) -> tqdm:
    """A phase's progress on stderr: runs done of ``total``, time spent and time left."""
    return tqdm(total=total, desc=f"benchmark: {what}", unit="run", file=sys.stderr)


def alternate(
    candidates: dict[str, Callable[[], object]],
    repeat: int,
    device: torch.device,
    what: str = "timing",
) -> dict[str, list[float]]:
    """Seconds of each callable in each of ``repeat`` rounds, after one warm-up each; every
    round runs all of them, starting with a different one, so a noisy machine slows all alike.
    Progress goes to a bar labelled ``what``."""
    run = clock(device)
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    with progress_bar(what, (repeat + 1) * len(names)) as bar:
        for fn in candidates.values():
            run(fn)
            bar.update()
        for round_index in range(repeat):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(run(candidates[name]) / 1000)
                bar.update()
    return times


def peak_memories(
    candidates: dict[str, Callable[[], object]], device: torch.device, what: str
) -> dict[str, float | None]:
    """:func:`peak_memory_mb` of each callable, with a progress bar labelled ``what``."""
    peaks = {}
    with progress_bar(what, len(candidates)) as bar:
        for name, fn in candidates.items():
            peaks[name] = peak_memory_mb(device, fn)
            bar.update()
    return peaks


SPLIT_STAGES = ("backbone", "pooling", "box_head")


def time_split(
    models: dict[str, nn.Module], inputs: list[dict], repeat: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Per detkit model, median seconds in the backbone, the pooler, the box head, and the
    rest of one inference (normalisation, deduplication, predictor, post-processing)."""
    run = clock(device)
    splits: dict[str, dict[str, list[float]]] = {}
    timers = {}
    for name, model in models.items():
        heads = model.roi_heads
        stages = {"backbone": model.backbone, "pooling": heads.pooler, "box_head": heads.box_head}
        timers[name] = StageTimer(stages, device)
        splits[name] = {stage: [] for stage in (*SPLIT_STAGES, "rest", "total")}
    bar = progress_bar("inference time split", (repeat + 1) * len(models))
    try:
        with torch.no_grad():
            for round_index in range(repeat + 1):
                for name, model in models.items():
                    timers[name].reset()
                    total = run(lambda model=model: model(inputs)) / 1000
                    bar.update()
                    if round_index == 0:
                        continue  # warm-up
                    seconds = timers[name].seconds
                    for stage in SPLIT_STAGES:
                        splits[name][stage].append(seconds[stage])
                    splits[name]["rest"].append(total - sum(seconds.values()))
                    splits[name]["total"].append(total)
    finally:
        bar.close()
        for timer in timers.values():
            timer.remove()
    return {
        name: {stage: statistics.median(v) for stage, v in stages.items()}
        for name, stages in splits.items()
    }


def training_step(forward: Callable[[], dict[str, Tensor]], model: nn.Module) -> Callable:
    """One iteration: forward, the summed losses' backward, an SGD step (momentum 0.9)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=1e-5, momentum=0.9)

    def step() -> None:
        losses = forward()
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


@dataclass
class ModelResult:
    name: str
    inference_s: float | None = None
    training_s: float | None = None
    inference_runs_s: list[float] = field(default_factory=list)
    training_runs_s: list[float] = field(default_factory=list)
    inference_peak_mb: float | None = None
    training_peak_mb: float | None = None
    split_s: dict[str, float] = field(default_factory=dict)


class BenchmarkError(RuntimeError):
    """The models cannot be compared (they disagree, detect nothing to compare, or the config
    has no peer)."""


def benchmark(cfg, args, device: torch.device) -> tuple[dict, list[ModelResult]]:
    """Builds the models, checks they agree, times and measures them: the setting and one
    result per model, the peer first."""
    torch.manual_seed(args.seed)
    height, width = args.image_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    log_phase(
        f"building {cfg.MODEL.BACKBONE.NAME} models on {device} for a {height}x{width} image "
        f"with {args.num_proposals} proposals"
    )
    model = build_model(cfg).to(device).eval()
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    samples = [
        distinct_proposals(
            model, make_sample(height, width, args.num_proposals, num_classes, args.seed + i)
        )
        for i in range(2)
    ]
    test_inputs = detkit_inputs(samples[:1], device)
    log_phase("calibrating the box head on the image")
    calibrate_head(model, test_inputs)
    try:
        peer = build_peer(cfg, model).eval()
    except ValueError as error:
        raise BenchmarkError(f"no torchvision-built counterpart of this config: {error}") from error
    models = {"detkit": model}
    if args.svd_ranks:
        ranks = svd_ranks_by_layer(args.svd_ranks)
        compressed = copy.deepcopy(model)
        try:
            compress_fc_layers(compressed.roi_heads.box_head, ranks)
        except ValueError as error:
            raise ConfigError(
                f"--svd-ranks {' '.join(map(str, args.svd_ranks))}: {error}"
            ) from None
        models["detkit + SVD (" + ", ".join(f"{k} {v}" for k, v in ranks.items()) + ")"] = (
            compressed
        )
    images, proposals, targets = peer_inputs(samples, device)
    log_phase("checking that both models detect the same")
    with torch.no_grad():
        mine = model(test_inputs)[0]["instances"]
        theirs = peer(images[:1], proposals[:1])[0]
    problem = detection_mismatch(mine, theirs)
    if problem:
        raise BenchmarkError(
            f"detkit and the torchvision-built model detect differently with the same weights "
            f"({problem}); not timing unequal work"
        )
    if len(mine) == 0:
        raise BenchmarkError(
            "neither model detects anything on the benchmark image (MODEL.ROI_HEADS."
            f"SCORE_THRESH_TEST={cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST}, TEST.DETECTIONS_PER_IMAGE"
            f"={cfg.TEST.DETECTIONS_PER_IMAGE}), so the check compared nothing and the "
            "post-processing would do no work; not timing it (lower the threshold)"
        )
    setting = {
        "config": args.config_file,
        "device": str(device),
        "image_size": [height, width],
        "proposals": [len(p) for p in proposals],
        "proposals_asked": args.num_proposals,
        "classes": num_classes + 1,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "pooler": cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        "fc_dim": cfg.MODEL.ROI_BOX_HEAD.FC_DIM,
        "rois_per_image_training": cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        "channels_last": bool(cfg.MODEL.CHANNELS_LAST),
        "detections_checked": len(mine),
        "repeat": args.repeat,
    }
    peer_name = "torchvision-built"
    results = {name: ModelResult(name) for name in (peer_name, *models)}
    if "inference" in args.tasks:
        runs = {peer_name: lambda: peer(images[:1], proposals[:1])}
        runs.update({name: (lambda m=m: m(test_inputs)) for name, m in models.items()})
        with torch.no_grad():
            for name, seconds in alternate(runs, args.repeat, device, "inference").items():
                results[name].inference_runs_s = seconds
                results[name].inference_s = statistics.median(seconds)
            for name, peak in peak_memories(runs, device, "inference peak memory").items():
                results[name].inference_peak_mb = peak
            for name, split in time_split(models, test_inputs, args.repeat, device).items():
                results[name].split_s = split
    if "training" in args.tasks:
        trained_peer = copy.deepcopy(peer).train()
        trained = copy.deepcopy(model).train()
        train_inputs = detkit_inputs(samples, device)
        steps = {
            peer_name: training_step(
                lambda: trained_peer(images, proposals, targets), trained_peer
            ),
            "detkit": training_step(lambda: trained(train_inputs), trained),
        }
        for name, seconds in alternate(steps, args.repeat, device, "training").items():
            results[name].training_runs_s = seconds
            results[name].training_s = statistics.median(seconds)
        for name, peak in peak_memories(steps, device, "training peak memory").items():
            results[name].training_peak_mb = peak
    return setting, list(results.values())


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value and reference else "-"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_tables(setting: dict, results: list[ModelResult]) -> str:
    """The comparison (times, ratios to the peer, peak memory) and detkit's time split."""
    peer = results[0]
    lines = [
        f"{setting['config']}: {setting['backbone']}, {setting['image_size'][0]}x"
        f"{setting['image_size'][1]} image, {setting['proposals'][0]} proposals, "
        f"{setting['classes']} classes, fc {setting['fc_dim']}, {setting['pooler']}, "
        f"{setting['device']}, channels-last {setting['channels_last']}",
        "",
        "| model | inference s/image | vs peer | training s/iter | vs peer "
        "| peak MB inference | peak MB training |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {_number(r.inference_s, 3)} | {_ratio(r.inference_s, peer.inference_s)}"
            f" | {_number(r.training_s, 3)} | {_ratio(r.training_s, peer.training_s)}"
            f" | {_number(r.inference_peak_mb, 0)} | {_number(r.training_peak_mb, 0)} |"
        )
    split_rows = [r for r in results if r.split_s]
    if split_rows:
        lines += [
            "",
            "| detkit inference, s | backbone | pooling | box head | predictor + rest "
            "| beyond the backbone |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in split_rows:
            s = r.split_s
            beyond = 1 - s["backbone"] / s["total"]
            lines.append(
                f"| {r.name} | {s['backbone']:.3f} | {s['pooling']:.3f} | {s['box_head']:.3f}"
                f" | {s['rest']:.3f} | {100 * beyond:.0f} % |"
            )
    return "\n".join(lines)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu"
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="default: INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST",
    )
    parser.add_argument("--num-proposals", type=positive_int, default=2000)
    parser.add_argument(
        "--svd-ranks",
        nargs="+",
        type=int,
        metavar="RANK",
        help="also time detkit with its fc layers factored to these ranks (fc6 first, 0: whole)",
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=["inference", "training"], default=["inference", "training"]
    )
    parser.add_argument(
        "--repeat", type=positive_int, help="timed rounds (default: 5 CPU, 20 CUDA)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help="also write every figure here"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY=VALUE config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, parse_overrides(args.opts))
    except ConfigError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmark: --device cuda asked for, but no CUDA device is available", file=sys.stderr
        )
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg.MODEL.DEVICE = device.type
    args.repeat = args.repeat or (20 if device.type == "cuda" else 5)
    try:
        setting, results = benchmark(cfg, args, device)
    except ConfigError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    except BenchmarkError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 1
    machine = describe_machine([device])
    print(" ".join(f"{k}={v}" for k, v in machine.items()))
    print(markdown_tables(setting, results))
    if args.json:
        figures = {"machine": machine, "setting": setting, "results": [asdict(r) for r in results]}
        write_bytes_atomically(args.json, json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
