"""What the tests of both RoI ops share: dtypes and layouts, RoI generators, a case type.

Fixtures shared by those tests (``deterministic``, ``num_threads``) live in this
folder's ``conftest.py``; the two ops as specs, for the tests written once for both
(``test_roi_ops.py``, ``test_roi_ops_cuda.py``), in ``roi_op_specs.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

requires_cuda = pytest.mark.cuda  # skipped without a CUDA device (the root conftest)

FLOAT_DTYPES = [torch.float32, torch.float64]
REDUCED_DTYPES = [torch.float16, torch.bfloat16]
# The dtypes autocast mixes, for features and RoIs alike.
AUTOCAST_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MEMORY_FORMATS = [torch.contiguous_format, torch.channels_last]
MEMORY_FORMAT_IDS = ["nchw", "nhwc"]
ERRORS = (ValueError, RuntimeError)


def dtype_id(value) -> str | None:
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None


def to_format(t: Tensor, memory_format: torch.memory_format) -> Tensor:
    return t.contiguous(memory_format=memory_format)


def pooled_memory_format(input: Tensor) -> torch.memory_format:
    """The layout the ops give outputs for ``input``: channels-last when the input is laid
    out so and not also contiguous (as a map of 1 x 1 cells or of one channel is)."""
    if not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def grad_through(
    pool: Callable[..., Tensor], input: Tensor, rois, output_size, scale, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """(output, input gradient) of ``pool`` for the upstream gradient ``grad``."""
    leaf = input.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    output = pool(leaf, rois, output_size, scale)
    output.backward(grad)
    return output.detach(), leaf.grad


def boxes_per_image(rois: Tensor, num_images: int) -> tuple[Tensor, list[Tensor]]:
    """``rois`` sorted by image (stably) and the same RoIs as one ``[Ki, 4]`` per image.

    The list form returns RoIs image after image, so results of the two forms
    line up only for sorted rows.
    """
    rois = rois[rois[:, 0].argsort(stable=True)]
    return rois, [rois[rois[:, 0] == i, 1:] for i in range(num_images)]


@dataclass(frozen=True)
class Case:
    input: Tensor  # float64, NCHW
    rois: Tensor  # float64, [K, 5]
    output_size: tuple[int, int]
    spatial_scale: float

    def cast(self, dtype: torch.dtype, memory_format=torch.contiguous_format, device="cpu"):
        input = to_format(self.input.to(device=device, dtype=dtype), memory_format)
        return input, self.rois.to(device=device, dtype=dtype)


def random_rois(
    gen: torch.Generator,
    num_images: int,
    num_rois: int,
    height: int,
    width: int,
    scale: float = 1.0,
    spread: float = 0.25,
    max_size: float | None = None,
    integer: bool = False,
) -> Tensor:
    """``[K, 5]`` float64 RoIs in image pixels; corners reach ``spread`` beyond the map."""
    size = torch.tensor([width, height], dtype=torch.float64)
    if max_size is None:
        a = torch.rand(num_rois, 2, 2, generator=gen, dtype=torch.float64)
        corners = (a * (1 + 2 * spread) - spread) * size
        first, second = corners.min(dim=1).values, corners.max(dim=1).values
    else:
        first = torch.rand(num_rois, 2, generator=gen, dtype=torch.float64) * size
        second = first + torch.rand(num_rois, 2, generator=gen, dtype=torch.float64) * max_size
    boxes = torch.cat([first, second], dim=1) / scale
    if integer:
        boxes = boxes.round()
    batch = torch.randint(0, num_images, (num_rois, 1), generator=gen).double()
    return torch.cat([batch, boxes], dim=1)


def rois_from(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def random_input(gen: torch.Generator, shape) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def input_and_rois(n=2, c=3, h=6, w=7, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """A small valid call, for the error tests to spoil one argument of."""
    return torch.randn(n, c, h, w, dtype=dtype), torch.tensor([[1.0, 0, 0, 3, 3]], dtype=dtype)


def fx_calls_to(graph_module: torch.fx.GraphModule, name: str) -> list[torch.fx.Node]:
    """The ``call_function`` nodes of a traced graph whose target is a function ``name``."""
    return [
        node
        for node in graph_module.graph.nodes
        if node.op == "call_function" and getattr(node.target, "__name__", None) == name
    ]
