"""The environment a run used, for its log: versions, devices, and detkit's compiled ops."""

from __future__ import annotations

import platform
import sys

import numpy as np
import torch
import torchvision

OPS = ("detkit::roi_pool_forward", "detkit::roi_align_forward")


def compiled_ops_summary() -> str:
    """Where detkit's ops have kernels (CPU, CUDA) and the extension file they come from."""
    from .. import _C  # the extension: importing it registers the kernels

    keys = [
        key
        for key in ("CPU", "CUDA")
        if all(torch._C._dispatch_has_kernel_for_dispatch_key(op, key) for op in OPS)
    ]
    return f"{', '.join(keys) or 'none'} kernels ({_C.__file__})"


def collect_env_info() -> str:
    """One ``name: value`` line per fact: Python, numpy, torch (and how it was built),
    torchvision, CUDA and cuDNN, the GPUs, detkit's compiled ops."""
    cuda = torch.cuda.is_available()
    rows = [
        ("sys.platform", f"{sys.platform} ({platform.machine()})"),
        ("Python", sys.version.replace("\n", " ")),
        ("numpy", np.__version__),
        ("torch", f"{torch.__version__} (built with CUDA {torch.version.cuda or 'none'})"),
        ("torchvision", torchvision.__version__),
        ("CPU threads", str(torch.get_num_threads())),
        ("CUDA available", str(cuda)),
    ]
    if cuda:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows += [("GPUs", ", ".join(names)), ("cuDNN", str(torch.backends.cudnn.version()))]
    rows.append(("detkit ops", compiled_ops_summary()))
    compiler = next(
        (line.strip(" -") for line in torch.__config__.show().splitlines() if "GCC" in line), None
    )
    if compiler:
        rows.append(("torch compiler", compiler))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
