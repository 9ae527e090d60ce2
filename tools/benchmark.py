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

The peer, the random inputs, the calibration and the equal-work check are the package
``tools/torchvision_peer`` beside this script, tested on their own
(tests/tools/test_torchvision_peer.py); this script times and reports.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torchvision_peer
from torch import Tensor, nn
from tqdm import tqdm

from detkit.config import ConfigError
from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.modeling import build_model
from detkit.modeling.roi_heads.box_head import svd_ranks_by_layer
from detkit.modeling.roi_heads.svd import compress_fc_layers
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.timing import clock, describe_machine, peak_memory_mb


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
        torchvision_peer.make_sample(height, width, args.num_proposals, num_classes, args.seed + i)
        for i in range(2)
    ]
    samples = [torchvision_peer.distinct_proposals(model, sample) for sample in samples]
    test_inputs = torchvision_peer.detkit_inputs(samples[:1], device)
    log_phase("calibrating the box head on the image")
    torchvision_peer.calibrate_head(model, test_inputs)
    try:
        peer = torchvision_peer.build_peer(cfg, model).eval()
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
    images, proposals, targets = torchvision_peer.peer_inputs(samples, device)
    log_phase("checking that both models detect the same")
    with torch.no_grad():
        mine = model(test_inputs)[0]["instances"]
        theirs = peer(images[:1], proposals[:1])[0]
    problem = torchvision_peer.detection_mismatch(
        mine, theirs, kept_at_most=cfg.TEST.DETECTIONS_PER_IMAGE
    )
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
        train_inputs = torchvision_peer.detkit_inputs(samples, device)
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
    parser = tool_argument_parser(__doc__, "the detector's config")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("benchmark", argument_parser(), run_benchmark, argv)


def run_benchmark(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # set before set-up, after which cfg is read-only
    args.opts = [*args.opts, f"MODEL.DEVICE={device.type}"]
    cfg = setup_config(args)
    args.repeat = args.repeat or (20 if device.type == "cuda" else 5)
    try:
        setting, results = benchmark(cfg, args, device)
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
