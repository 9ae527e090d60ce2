"""Times detkit's RoI max pooling against torchvision's at Fast R-CNN's shapes.

    python tools/benchmark_ops.py [--device cpu|cuda|all] [--shapes a,b,c] [--repeat N]
                                  [--json FILE] [--threads N]

Before timing, each shape checks that both ops give exactly the same outputs and input gradients;
a mismatch aborts with exit status 1. The two ops are timed in alternation (tv, detkit, tv, …) so
that a noisy machine slows both alike, and the median of the repeats is reported. Passes:
forward at inference (no gradient needed), forward at training (input requires a gradient, so
the argmax is kept), backward alone, forward+backward, and the bare operators (forward with
argmax, backward) without the Python wrapper and autograd around them. On CUDA the forward's
effective memory bandwidth is printed next to the device's peak.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from detkit.layers import roi_pool

OUTPUT_SIZE = 7
SPATIAL_SCALE = 1 / 16
STRIDE = 16


@dataclass(frozen=True)
class Shape:
    name: str
    what: str
    images: int
    channels: int
    height: int
    width: int
    rois: int


SHAPES = {
    "a": Shape("a", "test: VGG16 conv5_3, 600x1000 image", 1, 512, 38, 63, 2000),
    "b": Shape("b", "train: VGG16, 2 images x 64 RoIs", 2, 512, 38, 63, 128),
    "c": Shape("c", "train: ResNet-50-C4 res4, 2 images x 256 RoIs", 2, 1024, 50, 84, 512),
}

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


def make_rois(shape: Shape, device: torch.device, seed: int = 0) -> Tensor:
    """Boxes inside the image with log-uniform sizes from 16 px to the image size."""
    g = torch.Generator().manual_seed(seed)
    image = torch.tensor([shape.width * STRIDE, shape.height * STRIDE], dtype=torch.float32)
    low, high = math.log(16.0), torch.log(image)
    size = torch.exp(low + torch.rand(shape.rois, 2, generator=g) * (high - low))
    start = torch.rand(shape.rois, 2, generator=g) * (image - size)
    batch = (torch.arange(shape.rois) % shape.images).float()[:, None]
    return torch.cat([batch, start, start + size], dim=1).to(device)


def pool_detkit(x: Tensor, rois: Tensor) -> Tensor:
    return roi_pool(x, rois, OUTPUT_SIZE, SPATIAL_SCALE)


def pool_torchvision(x: Tensor, rois: Tensor) -> Tensor:
    return torchvision.ops.roi_pool(x, rois, OUTPUT_SIZE, SPATIAL_SCALE)


def check_agreement(x: Tensor, rois: Tensor, grad: Tensor) -> None:
    """Exits unless both ops give identical outputs and input gradients.

    On CUDA both backward passes add with atomics in a run-dependent order, so there the
    gradients only have to agree to float32 rounding.
    """
    results = []
    for pool in (pool_torchvision, pool_detkit):
        leaf = x.detach().clone().requires_grad_()
        out = pool(leaf, rois)
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    (tv_out, tv_grad), (dk_out, dk_grad) = results
    if x.device.type == "cuda":
        grads_agree = torch.allclose(tv_grad, dk_grad, rtol=1e-4, atol=1e-4)
    else:
        grads_agree = torch.equal(tv_grad, dk_grad)
    for what, agree in (("outputs", torch.equal(tv_out, dk_out)), ("gradients", grads_agree)):
        if not agree:
            sys.exit(f"benchmark_ops: detkit and torchvision {what} differ; not timing a wrong op")


def clock(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs a callable once and returns its time in milliseconds."""
    if device.type == "cuda":

        def run(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)

        return run

    def run_cpu(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000

    return run_cpu


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


def passes(x: Tensor, rois: Tensor, grad: Tensor) -> dict[str, dict[str, Callable[[], object]]]:
    """The timed work of each pass, for both implementations.

    The "op" passes call the registered operators directly (forward with argmax, and
    backward), without the Python wrappers and the autograd machinery around them.
    """
    leaf = x.detach().clone().requires_grad_()
    size = (OUTPUT_SIZE, OUTPUT_SIZE)
    raw = {
        "torchvision": (
            lambda: torch.ops.torchvision.roi_pool(x, rois, SPATIAL_SCALE, *size),
            torch.ops.torchvision._roi_pool_backward,
        ),
        "detkit": (
            lambda: torch.ops.detkit.roi_pool_forward(x, rois, SPATIAL_SCALE, *size, True),
            torch.ops.detkit.roi_pool_backward,
        ),
    }
    calls = {}
    for name, pool in (("torchvision", pool_torchvision), ("detkit", pool_detkit)):
        out = pool(leaf, rois)  # kept for the backward-only pass
        op_forward, op_backward = raw[name]
        argmax = op_forward()[1]

        def infer(pool=pool) -> Tensor:
            with torch.no_grad():
                return pool(x, rois)

        def backward(out=out) -> object:
            return torch.autograd.grad(out, leaf, grad, retain_graph=True)

        def forward_backward(pool=pool) -> object:
            return torch.autograd.grad(pool(leaf, rois), leaf, grad)

        def backward_op(op_backward=op_backward, argmax=argmax) -> Tensor:
            return op_backward(grad, rois, argmax, SPATIAL_SCALE, *size, *x.shape)

        calls[name] = {
            "forward (inference)": infer,
            "forward (training)": lambda pool=pool: pool(leaf, rois),
            "backward": backward,
            "forward+backward": forward_backward,
            "op forward": op_forward,
            "op backward": backward_op,
        }
    return {p: {n: calls[n][p] for n in calls} for p in calls["detkit"]}


def peak_bandwidth(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BANDWIDTH.items():
        if key in name:
            return value
    return None


def forward_bytes(shape: Shape, element_size: int, with_argmax: bool) -> int:
    """Bytes a minimal forward moves: the input once, the output (and argmax) once."""
    outputs = shape.rois * shape.channels * OUTPUT_SIZE * OUTPUT_SIZE
    inputs = shape.images * shape.channels * shape.height * shape.width
    return (inputs + outputs) * element_size + (outputs * 4 if with_argmax else 0)


def benchmark(device: torch.device, shape: Shape, repeat: int) -> list[Row]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.images, shape.channels, shape.height, shape.width, generator=g)
    x = x.to(device)
    rois = make_rois(shape, device)
    grad = torch.randn(shape.rois, shape.channels, OUTPUT_SIZE, OUTPUT_SIZE, generator=g)
    grad = grad.to(device)
    check_agreement(x, rois, grad)
    rows = []
    for what, fns in passes(x, rois, grad).items():
        tv_ms, dk_ms = time_pair(device, fns["torchvision"], fns["detkit"], repeat)
        row = Row(device.type, shape.name, what, tv_ms, dk_ms, tv_ms / dk_ms)
        if device.type == "cuda" and "forward" in what and "backward" not in what:
            moved = forward_bytes(shape, x.element_size(), what != "forward (inference)")
            # torchvision always writes the argmax, so its minimum includes it
            tv_moved = forward_bytes(shape, x.element_size(), True)
            row.detkit_gbps = moved / dk_ms / 1e6
            row.torchvision_gbps = tv_moved / tv_ms / 1e6
        rows.append(row)
    return rows


def describe_machine(devices: list[torch.device]) -> dict[str, object]:
    info: dict[str, object] = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }
    for device in devices:
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
            info["gpu_peak_gbps"] = peak_bandwidth(device)
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(rows: list[Row], info: dict[str, object]) -> None:
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    header = (
        f"{'device':6} {'shape':5} {'pass':22} {'torchvision ms':>15} {'detkit ms':>10}"
        f" {'tv/detkit':>10}"
    )
    if any(r.detkit_gbps for r in rows):
        header += f" {'detkit GB/s':>12} {'tv GB/s':>9}"
    print(header)
    for r in rows:
        line = (
            f"{r.device:6} {r.shape:5} {r.what:22} {r.torchvision_ms:15.3f} {r.detkit_ms:10.3f}"
            f" {r.ratio:9.1f}x"
        )
        if r.detkit_gbps:
            line += f" {r.detkit_gbps:12.0f} {r.torchvision_gbps:9.0f}"
        print(line)
    if info.get("gpu"):
        print(f"GPU peak memory bandwidth: {info['gpu_peak_gbps'] or 'unknown'} GB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--shapes", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--repeat", type=int, help="timed runs per op (default: 5 CPU, 50 CUDA)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU runs")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
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
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
