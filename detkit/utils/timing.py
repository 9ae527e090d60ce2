"""Timing and memory measurement for the benchmark tools: one clock per device, peak memory of
one call, and a description of the machine that goes next to every figure."""

from __future__ import annotations

import ctypes
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision


def clock(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs a callable once and returns its time in milliseconds (CUDA events
    on a GPU, so queued work is counted)."""
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


def peak_memory_mb(device: torch.device, fn: Callable[[], object]) -> float | None:
    """Memory ``fn`` needs at its peak beyond what was in use before, in MiB: CUDA's peak
    allocation, or on Linux CPUs the growth of the process's peak resident set (``VmHWM``,
    reset through ``/proc/self/clear_refs`` after returning freed heap to the system). ``None``
    where neither can be read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def describe_machine(devices: list[torch.device]) -> dict[str, object]:
    """Versions, thread count, CPU and GPU: what a reader needs to compare figures."""
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
            info["deterministic"] = torch.are_deterministic_algorithms_enabled()
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
