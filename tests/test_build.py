"""The compiled extension holds the kernels the build promised."""

import os

import pytest
import torch

import detkit.layers  # noqa: F401  (loads detkit._C)

OPS = ["roi_pool_forward", "roi_pool_backward", "roi_align_forward", "roi_align_backward"]


@pytest.mark.parametrize("op", OPS)
def test_cpu_kernels_registered(op: str) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"detkit::{op}", "CPU")


@pytest.mark.skipif(
    os.environ.get("DETKIT_EXPECT_CUDA_KERNELS") != "1" and not torch.cuda.is_available(),
    reason="CUDA kernels are expected only where nvcc built them (CI sets the variable)",
)
@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_registered(op: str) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"detkit::{op}", "CUDA")
