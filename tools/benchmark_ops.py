"""Times detkit's RoI ops against torchvision's at the shapes of the models that use them.

    python tools/benchmark_ops.py [--device cpu|cuda|all] [--shapes a,b,c,fpn0,fpn2,...]
                                  [--repeat N] [--json FILE] [--threads N] [--deterministic]

Shapes: RoI max pooling (``roi_pool``) at Fast R-CNN's (a, b, c), and RoIAlign (``roi_align``,
aligned) over the P2-P5 maps of the R50-FPN model with sampling ratio 0 or 2 (fpn0, fpn2; the
``-nhwc`` variants feed channels-last maps). An FPN shape assigns each RoI to a level by
detectron2's rule and calls each op once per level, as a multi-level pooler does.

Before timing, each shape checks that both implementations give the same outputs and input
gradients (exactly on CPU; to 1e-4 on CUDA, where both backward passes add with atomics in a
run-dependent order); a mismatch aborts with exit status 1. The two are timed in alternation
(torchvision, detkit, torchvision, ...) so that a noisy machine slows both alike, and the
median of the repeats is reported. Passes: forward at inference (no gradient needed), forward at
training (inputs require a gradient: roi_pool keeps its argmax), backward alone,
forward+backward, and the bare operators (forward, backward) without the Python wrappers and
autograd. On CUDA the forward's effective memory bandwidth is printed next to the device's peak;
``--deterministic`` times CUDA backward passes under ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torchvision
from torch import Tensor

from detkit.layers import roi_align, roi_pool
from detkit.utils.arguments import output_file, positive_int
from detkit.utils.file_io import write_bytes_atomically
from detkit.utils.timing import clock
from detkit.utils.timing import describe_machine as machine_description
from detkit.utils.tool_help import tool_description

OUTPUT_SIZE = 7


@dataclass(frozen=True)
class Shape:
    name: str
    what: str
    op: str  # "roi_pool" or "roi_align"
    images: int
    channels: int
    image_height: int  # pixels
    image_width: int
    strides: tuple[int, ...]  # one feature map per stride
    rois: int
    sampling_ratio: int = 0
    channels_last: bool = False

    def map_size(self, stride: int) -> tuple[int, int]:
        return math.ceil(self.image_height / stride), math.ceil(self.image_width / stride)


def _fpn(name: str, sampling_ratio: int, channels_last: bool) -> Shape:
    layout = ", channels-last" if channels_last else ""
    return Shape(
        name,
        f"train: R50-FPN P2-P5, 2 images x 512 RoIs, ROIAlignV2, sampling {sampling_ratio}{layout}",
        "roi_align",
        2,
        256,
        800,
        1216,
        (4, 8, 16, 32),
        1024,
        sampling_ratio,
        channels_last,
    )


SHAPES = {
    "a": Shape(
        "a", "test: VGG16 conv5_3, 600x1000 image", "roi_pool", 1, 512, 608, 1008, (16,), 2000
    ),
    "b": Shape("b", "train: VGG16, 2 images x 64 RoIs", "roi_pool", 2, 512, 608, 1008, (16,), 128),
    "c": Shape(
        "c",
        "train: ResNet-50-C4 res4, 2 images x 256 RoIs",
        "roi_pool",
        2,
        1024,
        800,
        1344,
        (16,),
        512,
    ),
    "fpn0": _fpn("fpn0", 0, False),
    "fpn2": _fpn("fpn2", 2, False),
    "fpn0-nhwc": _fpn("fpn0-nhwc", 0, True),
    "fpn2-nhwc": _fpn("fpn2-nhwc", 2, True),
}
DEFAULT_SHAPES = "a,b,c,fpn0,fpn2,fpn0-nhwc"

# Peak HBM bandwidth by device name, in GB/s (vendor figures).
PEAK_BANDWIDTH = {
    "H100 PCIe": 2000,
    "H100": 3350,
    "H200": 4800,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100": 1555,
}


@dataclass
class Row:
    device: str
    shape: str
    what: str
    torchvision_ms: float
    detkit_ms: float
    ratio: float
    detkit_gbps: float | None = None
    torchvision_gbps: float | None = None


def make_boxes(shape: Shape, seed: int = 0) -> Tensor:
    """``[K, 5]`` RoIs inside the image, log-uniform sizes from 16 px to the image size, batch
    indices spread evenly over the images."""
    g = torch.Generator().manual_seed(seed)
    image = torch.tensor([shape.image_width, shape.image_height], dtype=torch.float32)
    low, high = math.log(16.0), torch.log(image)
    size = torch.exp(low + torch.rand(shape.rois, 2, generator=g) * (high - low))
    start = torch.rand(shape.rois, 2, generator=g) * (image - size)
    batch = (torch.arange(shape.rois) % shape.images).float()[:, None]
    return torch.cat([batch, start, start + size], dim=1)


def fpn_levels(rois: Tensor, strides: tuple[int, ...]) -> Tensor:
    """Index into ``strides`` of every RoI's map: detectron2's
    ``floor(4 + log2(sqrt(area) / 224))``, clamped to the maps there are."""
    if len(strides) == 1:
        return torch.zeros(len(rois), dtype=torch.int64)
    side = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    level = torch.floor(4 + torch.log2(side / 224 + 1e-8))
    first = int(math.log2(strides[0]))
    return (level.clamp(first, first + len(strides) - 1) - first).to(torch.int64)


@dataclass
class Inputs:
    maps: list[Tensor]  # one per stride
    rois: list[Tensor]  # the RoIs of each map
    grads: list[Tensor]  # an upstream gradient per map's output
    scales: list[float]


def make_inputs(shape: Shape, device: torch.device) -> Inputs:
    g = torch.Generator().manual_seed(1)
    boxes = make_boxes(shape)
    level = fpn_levels(boxes, shape.strides)
    memory_format = torch.channels_last if shape.channels_last else torch.contiguous_format
    maps, rois, grads = [], [], []
    for i, stride in enumerate(shape.strides):
        height, width = shape.map_size(stride)
        x = torch.randn(shape.images, shape.channels, height, width, generator=g)
        maps.append(x.to(device).contiguous(memory_format=memory_format))
        rois.append(boxes[level == i].to(device))
        grad = torch.randn(len(rois[-1]), shape.channels, OUTPUT_SIZE, OUTPUT_SIZE, generator=g)
        grads.append(grad.to(device).contiguous(memory_format=memory_format))
    return Inputs(maps, rois, grads, [1.0 / s for s in shape.strides])


@dataclass(frozen=True)
class Implementation:
    """One library's op at one shape: the wrapper ``pool(x, rois, scale)`` and its registered
    operators ``forward(x, rois, scale)`` and ``backward(grad, rois, scale, x, saved)`` (``saved``:
    what the forward operator returned)."""

    pool: Callable[[Tensor, Tensor, float], Tensor]
    forward: Callable[[Tensor, Tensor, float], object]
    backward: Callable[[Tensor, Tensor, float, Tensor, object], Tensor]


def implementations(shape: Shape) -> dict[str, Implementation]:
    size = (OUTPUT_SIZE, OUTPUT_SIZE)
    if shape.op == "roi_pool":
        return {
            "torchvision": Implementation(
                lambda x, r, s: torchvision.ops.roi_pool(x, r, size, s),
                lambda x, r, s: torch.ops.torchvision.roi_pool(x, r, s, *size),
                lambda g, r, s, x, saved: torch.ops.torchvision._roi_pool_backward(
                    g, r, saved[1], s, *size, *x.shape
                ),
            ),
            "detkit": Implementation(
                lambda x, r, s: roi_pool(x, r, size, s),
                lambda x, r, s: torch.ops.detkit.roi_pool_forward(x, r, s, *size, True),
                lambda g, r, s, x, saved: torch.ops.detkit.roi_pool_backward(
                    g, r, saved[1], s, *size, *x.shape
                ),
            ),
        }
    ratio = shape.sampling_ratio
    return {
        "torchvision": Implementation(
            lambda x, r, s: torchvision.ops.roi_align(x, r, size, s, ratio, True),
            lambda x, r, s: torch.ops.torchvision.roi_align(x, r, s, *size, ratio, True),
            lambda g, r, s, x, saved: torch.ops.torchvision._roi_align_backward(
                g, r, s, *size, *x.shape, ratio, True
            ),
        ),
        "detkit": Implementation(
            lambda x, r, s: roi_align(x, r, size, s, ratio, True),
            lambda x, r, s: torch.ops.detkit.roi_align_forward(x, r, s, *size, ratio, True),
            lambda g, r, s, x, saved: torch.ops.detkit.roi_align_backward(
                g, r, s, *size, ratio, True, *x.shape
            ),
        ),
    }


def outputs_and_gradients(impl: Implementation, inputs: Inputs) -> tuple[list, list]:
    leaves = [x.detach().clone().requires_grad_() for x in inputs.maps]
    outputs = [
        impl.pool(x, r, s) for x, r, s in zip(leaves, inputs.rois, inputs.scales, strict=True)
    ]
    torch.autograd.backward(outputs, inputs.grads)
    return [o.detach() for o in outputs], [x.grad for x in leaves]


def check_agreement(shape: Shape, inputs: Inputs) -> None:
    """Exits unless both implementations give the same outputs and input gradients.

    On CUDA the backward passes add with atomics in a run-dependent order, so there the
    gradients only have to agree to float32 rounding.
    """
    impls = implementations(shape)
    tv_out, tv_grad = outputs_and_gradients(impls["torchvision"], inputs)
    dk_out, dk_grad = outputs_and_gradients(impls["detkit"], inputs)
    cuda = inputs.maps[0].device.type == "cuda"
    for what, tv, dk in (("outputs", tv_out, dk_out), ("gradients", tv_grad, dk_grad)):
        for a, b in zip(tv, dk, strict=True):
            same = torch.allclose(a, b, rtol=1e-4, atol=1e-4) if cuda else torch.equal(a, b)
            if not same:
                sys.exit(
                    f"benchmark_ops: detkit and torchvision {what} differ at shape {shape.name}; "
                    "not timing a wrong op"
                )


def time_pair(
    device: torch.device, tv: Callable[[], object], dk: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median times of `tv` and `dk`, run in alternation after one warm-up each."""
    run = clock(device)
    run(tv)
    run(dk)
    tv_times, dk_times = [], []
    for _ in range(repeat):
        tv_times.append(run(tv))
        dk_times.append(run(dk))
    return statistics.median(tv_times), statistics.median(dk_times)


def passes(shape: Shape, inputs: Inputs) -> dict[str, dict[str, Callable[[], object]]]:
    """The timed work of each pass for both implementations, every map's op call in each."""
    work = list(zip(inputs.maps, inputs.rois, inputs.scales, inputs.grads, strict=True))
    leaves = [x.detach().clone().requires_grad_() for x in inputs.maps]
    calls: dict[str, dict[str, Callable[[], object]]] = {}
    for name, impl in implementations(shape).items():
        kept = [impl.pool(leaf, r, s) for leaf, (_, r, s, _) in zip(leaves, work, strict=True)]
        saved = [impl.forward(x, r, s) for x, r, s, _ in work]

        def infer(impl=impl) -> object:
            with torch.no_grad():
                return [impl.pool(x, r, s) for x, r, s, _ in work]

        def train(impl=impl) -> object:
            return [impl.pool(leaf, r, s) for leaf, (_, r, s, _) in zip(leaves, work, strict=True)]

        def backward(kept=kept) -> object:
            return torch.autograd.grad(kept, leaves, inputs.grads, retain_graph=True)

        def forward_backward(impl=impl) -> object:
            outputs = [
                impl.pool(leaf, r, s) for leaf, (_, r, s, _) in zip(leaves, work, strict=True)
            ]
            return torch.autograd.grad(outputs, leaves, inputs.grads)

        def op_forward(impl=impl) -> object:
            return [impl.forward(x, r, s) for x, r, s, _ in work]

        def op_backward(impl=impl, saved=saved) -> object:
            return [
                impl.backward(g, r, s, x, out)
                for (x, r, s, g), out in zip(work, saved, strict=True)
            ]

        calls[name] = {"forward (inference)": infer}
        if shape.op == "roi_pool":  # only max pooling computes more when training
            calls[name]["forward (training)"] = train
        calls[name].update(
            {
                "backward": backward,
                "forward+backward": forward_backward,
                "op forward": op_forward,
                "op backward": op_backward,
            }
        )
    return {p: {n: calls[n][p] for n in calls} for p in calls["detkit"]}


def peak_bandwidth(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BANDWIDTH.items():
        if key in name:
            return value
    return None


def forward_bytes(shape: Shape, inputs: Inputs, with_argmax: bool) -> int:
    """Bytes a minimal forward moves: the maps once, the outputs (and argmax) once."""
    element = inputs.maps[0].element_size()
    outputs = sum(len(r) for r in inputs.rois) * shape.channels * OUTPUT_SIZE * OUTPUT_SIZE
    maps = sum(x.numel() for x in inputs.maps)
    return (maps + outputs) * element + (outputs * 4 if with_argmax else 0)


def benchmark(device: torch.device, shape: Shape, repeat: int) -> list[Row]:
    inputs = make_inputs(shape, device)
    check_agreement(shape, inputs)
    rows = []
    for what, fns in passes(shape, inputs).items():
        tv_ms, dk_ms = time_pair(device, fns["torchvision"], fns["detkit"], repeat)
        row = Row(device.type, shape.name, what, tv_ms, dk_ms, tv_ms / dk_ms)
        if device.type == "cuda" and "forward" in what and "backward" not in what:
            argmax = shape.op == "roi_pool"
            moved = forward_bytes(shape, inputs, argmax and what != "forward (inference)")
            # torchvision's roi_pool always writes the argmax, so its minimum includes it
            row.detkit_gbps = moved / dk_ms / 1e6
            row.torchvision_gbps = forward_bytes(shape, inputs, argmax) / tv_ms / 1e6
        rows.append(row)
    return rows


def describe_machine(devices: list[torch.device]) -> dict[str, object]:
    info = machine_description(devices)
    for device in devices:
        if device.type == "cuda":
            info["gpu_peak_gbps"] = peak_bandwidth(device)
    return info


def print_table(rows: list[Row], info: dict[str, object]) -> None:
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    header = (
        f"{'device':6} {'shape':9} {'pass':22} {'torchvision ms':>15} {'detkit ms':>10}"
        f" {'tv/detkit':>10}"
    )
    if any(r.detkit_gbps for r in rows):
        header += f" {'detkit GB/s':>12} {'tv GB/s':>9}"
    print(header)
    for r in rows:
        line = (
            f"{r.device:6} {r.shape:9} {r.what:22} {r.torchvision_ms:15.3f} {r.detkit_ms:10.3f}"
            f" {r.ratio:9.1f}x"
        )
        if r.detkit_gbps:
            line += f" {r.detkit_gbps:12.0f} {r.torchvision_gbps:9.0f}"
        print(line)
    if info.get("gpu"):
        print(f"GPU peak memory bandwidth: {info['gpu_peak_gbps'] or 'unknown'} GB/s")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=tool_description(__doc__))
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help=f"comma-separated subset of {','.join(SHAPES)}"
    )
    parser.add_argument(
        "--repeat", type=positive_int, help="timed runs per op (default: 5 CPU, 50 CUDA)"
    )
    parser.add_argument("--json", type=output_file, help="also write the results to this JSON file")
    parser.add_argument(
        "--threads", type=positive_int, help="torch.set_num_threads for the CPU runs"
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="time under torch.use_deterministic_algorithms(True)",
    )
    return parser


def main() -> None:
    args = argument_parser().parse_args()

    unknown = [name for name in args.shapes.split(",") if name not in SHAPES]
    if unknown:
        sys.exit(f"benchmark_ops: unknown shape(s) {unknown}; choose from {sorted(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        sys.exit("benchmark_ops: --device cuda asked for, but no CUDA device is available")
    info = describe_machine(devices)
    if args.device == "all" and not torch.cuda.is_available():
        print("benchmark_ops: no CUDA device here; timing the CPU only")

    rows = []
    for device in devices:
        repeat = args.repeat or (50 if device.type == "cuda" else 5)
        for name in args.shapes.split(","):
            rows += benchmark(device, SHAPES[name], repeat)
    print_table(rows, info)
    if args.json:
        results = {"machine": info, "rows": [asdict(r) for r in rows]}
        write_bytes_atomically(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
