"""The environment lines a run logs: versions and where detkit's ops have kernels."""

from __future__ import annotations

import torch
import torchvision

from detkit.layers import roi_pool
from detkit.utils.env import collect_env_info


def test_env_info_names_versions_and_the_compiled_ops() -> None:
    text = collect_env_info()
    assert torch.__version__ in text and torchvision.__version__ in text
    ops = next(line for line in text.splitlines() if line.startswith("detkit ops"))
    # the CPU kernel is there: the op runs on a CPU tensor
    roi_pool(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), 2)
    assert "CPU" in ops and "_C" in ops
    assert ("CUDA" in ops.split("kernels")[0]) == torch._C._dispatch_has_kernel_for_dispatch_key(
        "detkit::roi_pool_forward", "CUDA"
    )
