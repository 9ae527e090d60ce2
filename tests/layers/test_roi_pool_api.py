"""Tests of RoIPool's API around the values: autograd, opcheck, torch.compile, torch.fx,
``K = 0``, the module, argument errors and CPU autocast.
"""

from __future__ import annotations

import pytest
import torch
from roi_pool_cases import detkit_forward
from roi_testing import (
    AUTOCAST_DTYPES,
    ERRORS,
    FLOAT_DTYPES,
    MEMORY_FORMATS,
    REDUCED_DTYPES,
    boxes_per_image,
    dtype_id,
    fx_calls_to,
    grad_through,
    input_and_rois,
    random_rois,
    rois_from,
    to_format,
)
from torch import Tensor, nn

from detkit.layers import ROIPool, roi_pool

# ------------------------------------------------------------- autograd, opcheck


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_gradcheck(memory_format) -> None:
    gen = torch.Generator().manual_seed(23)
    input = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)  # no ties
    input = to_format(input, memory_format).requires_grad_()
    rois = random_rois(gen, 2, 5, 6, 7, spread=0.1).double()
    rois = torch.cat([rois, rois_from([[1, 1, 1, 6, 5], [0, 2, 2, 2, 2]])])
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, rois, (2, 3), 1.0), (input,))
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert torch.autograd.gradcheck(lambda x: ROIPool(2, 1.0)(x, boxes), (input,))


@pytest.mark.parametrize("with_argmax", [True, False])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_opcheck_forward(memory_format, with_argmax: bool) -> None:
    gen = torch.Generator().manual_seed(29)
    input = to_format(torch.randn(2, 3, 5, 6, generator=gen), memory_format)
    input.requires_grad_(with_argmax)
    rois = random_rois(gen, 2, 4, 5, 6).float()
    torch.library.opcheck(
        torch.ops.detkit.roi_pool_forward.default, (input, rois, 0.5, 2, 3, with_argmax)
    )


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
def test_opcheck_backward(memory_format) -> None:
    gen = torch.Generator().manual_seed(31)
    input = to_format(torch.randn(2, 3, 5, 6, generator=gen), memory_format)
    rois = random_rois(gen, 2, 4, 5, 6).float()
    output, argmax = detkit_forward(input, rois, 1.0, (2, 3))
    grad = torch.randn(output.shape, generator=gen).contiguous(memory_format=memory_format)
    torch.library.opcheck(
        torch.ops.detkit.roi_pool_backward.default,
        (grad, rois, argmax, 1.0, 2, 3, 2, 3, 5, 6),
    )


# -------------------------------------------------------------------- torch.compile


class TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = ROIPool((2, 3), 0.5)
        self.head = nn.Linear(4 * 2 * 3, 5)

    def forward(self, images: Tensor, rois) -> Tensor:
        features = torch.relu(self.conv(images))
        return self.head(self.pool(features, rois).flatten(1))


def _compile_inputs(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    images = torch.randn(2, 3, 10, 12, generator=gen)
    return images, random_rois(gen, 2, 6, 10, 12, scale=0.5).float()


def _outputs_and_grads(model: nn.Module, images: Tensor, rois) -> list[Tensor]:
    images = images.clone().requires_grad_()
    model.zero_grad()
    model(images, rois).square().sum().backward()
    return [model(images, rois).detach(), images.grad, *(p.grad for p in model.parameters())]


def test_compile_fullgraph_aot_eager() -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(37)
    torch.manual_seed(0)
    model = TinyDetector()
    images, rois = _compile_inputs(gen)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    expected = _outputs_and_grads(model, images, boxes)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    actual = _outputs_and_grads(compiled, images, boxes)
    assert counter.frame_count >= 1
    assert any("detkit.roi_pool_forward" in str(g.code) for g in counter.graphs)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


def test_compile_fullgraph_inductor() -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(41)
    torch.manual_seed(0)
    model = TinyDetector()
    images, rois = _compile_inputs(gen)
    expected = _outputs_and_grads(model, images, rois)
    actual = _outputs_and_grads(torch.compile(model, fullgraph=True), images, rois)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


# ---------------------------------------------------------- empty RoIs, the module


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_form", ["tensor", "list"])
def test_no_rois(rois_form: str, dtype, memory_format) -> None:
    input = to_format(torch.randn(2, 3, 5, 6, dtype=dtype), memory_format).requires_grad_()
    if rois_form == "tensor":
        rois = torch.empty(0, 5, dtype=dtype)
    else:
        rois = [torch.empty(0, 4, dtype=dtype), torch.empty(0, 4, dtype=dtype)]
    output = roi_pool(input, rois, (3, 4), 0.25)
    assert output.shape == (0, 3, 3, 4)
    assert output.dtype == dtype
    output.sum().backward()
    assert input.grad.shape == input.shape
    assert torch.equal(input.grad, torch.zeros_like(input))
    with torch.no_grad():
        assert roi_pool(input, rois, 2).shape == (0, 3, 2, 2)
    raw_output, argmax = detkit_forward(input.detach(), torch.empty(0, 5, dtype=dtype), 1.0, (2, 2))
    assert raw_output.shape == argmax.shape == (0, 3, 2, 2)


def test_module() -> None:
    pool = ROIPool(7, 1 / 16)
    assert pool.output_size == (7, 7)
    text = repr(pool)
    assert "output_size=(7, 7)" in text
    assert "spatial_scale=0.0625" in text
    assert "output_size=(3, 5)" in repr(ROIPool((3, 5), 0.5))

    gen = torch.Generator().manual_seed(43)
    input = torch.randn(2, 3, 10, 10, generator=gen)
    rois = random_rois(gen, 2, 9, 10, 10, scale=1 / 16).float()
    assert torch.equal(pool(input, rois), roi_pool(input, rois, (7, 7), 1 / 16))
    assert torch.equal(pool(input, rois), roi_pool(input, rois, 7, 1 / 16))


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "input_shape", [(3, 6, 7), (1, 2, 3, 6, 7), (6,)], ids=["3-D", "5-D", "1-D"]
)
def test_input_must_be_4d(input_shape) -> None:
    _, rois = input_and_rois()
    with pytest.raises(ERRORS, match="4-D"):
        roi_pool(torch.randn(input_shape), rois, 2)


@pytest.mark.parametrize("rois_shape", [(1, 4), (1, 6), (5,), (1, 1, 5)])
def test_rois_must_be_k_by_5(rois_shape) -> None:
    input, _ = input_and_rois()
    with pytest.raises(ERRORS, match=r"\[K, 5\]"):
        roi_pool(input, torch.zeros(rois_shape), 2)


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 0.5, 1e9, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_bad_batch_index(batch_index: float, dtype) -> None:
    input, _ = input_and_rois(dtype=dtype)
    rois = torch.tensor([[0.0, 0, 0, 3, 3], [batch_index, 0, 0, 3, 3]], dtype=dtype)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        roi_pool(input, rois, 2)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        detkit_forward(input, rois, 1.0, (2, 2))


@pytest.mark.parametrize("column", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_corner(column: int, value: float) -> None:
    input, rois = input_and_rois()
    rois = torch.cat([torch.tensor([[0.0, 1, 1, 2, 2]]), rois])
    rois[1, column] = value
    with pytest.raises(ValueError, match=r"(?i)finite"):
        roi_pool(input, rois, 2)


def test_device_mismatch_with_meta() -> None:
    """CPU-only stand-in for a CPU/CUDA mismatch: the meta device."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input, rois.to("meta"), 1.0, (2, 2))
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input.to("meta"), rois, 1.0, (2, 2))


@pytest.mark.parametrize(
    ("input_dtype", "rois_dtype"),
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.float16),  # float16 on CPU outside autocast
        (torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.int32, torch.int32),
        (torch.int64, torch.float32),
    ],
)
def test_dtype_errors(input_dtype, rois_dtype) -> None:
    input = torch.ones(1, 2, 4, 4).to(input_dtype)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]]).to(rois_dtype)
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        roi_pool(input, rois, 2)


@pytest.mark.parametrize("output_size", [0, -1, (0, 2), (2, 0), (2, -3), (2,), (2, 2, 2), 2.5])
def test_bad_output_size(output_size) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="output_size"):
        roi_pool(input, rois, output_size)
    with pytest.raises(ERRORS, match="output_size"):
        ROIPool(output_size, 1.0)


@pytest.mark.parametrize(("pooled_height", "pooled_width"), [(0, 2), (2, 0), (-1, 2)])
def test_raw_op_bad_pooled_size(pooled_height: int, pooled_width: int) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_pool_forward(input, rois, 1.0, pooled_height, pooled_width)
    grad = torch.zeros(1, 3, 2, 2)
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_pool_backward(
            grad, rois, argmax, 1.0, pooled_height, pooled_width, 2, 3, 6, 7
        )


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_bad_spatial_scale(scale: float) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="spatial_scale"):
        roi_pool(input, rois, 2, scale)
    with pytest.raises(ERRORS, match="spatial_scale"):
        detkit_forward(input, rois, scale, (2, 2))
    with pytest.raises(ERRORS, match="spatial_scale"):
        ROIPool(2, scale)


@pytest.mark.parametrize("num_boxes_tensors", [0, 1, 3])
def test_list_length_must_match_batch(num_boxes_tensors: int) -> None:
    input, _ = input_and_rois(n=2)
    boxes = [torch.tensor([[0.0, 0, 3, 3]])] * num_boxes_tensors
    with pytest.raises(ValueError, match="2 images"):
        roi_pool(input, boxes, 2)


def test_error_messages_name_roi_pool() -> None:
    """Errors of the checks both ops share say which op refused the call."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="roi_pool"):
        roi_pool(input, rois[:, :4], 2)
    with pytest.raises(ERRORS, match="roi_pool"):
        roi_pool(input, rois, 0)


# ------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("rois_dtype", ["same", torch.float32], ids=dtype_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_autocast_cpu_reduced_precision(dtype: torch.dtype, rois_dtype) -> None:
    gen = torch.Generator().manual_seed(47)
    input = torch.randn(2, 3, 9, 8, generator=gen).to(dtype)
    rois = random_rois(gen, 2, 12, 9, 8, scale=0.5)
    rois = rois.to(dtype if rois_dtype == "same" else rois_dtype)
    grad = torch.randint(-3, 4, (12, 3, 2, 3), generator=gen).to(dtype)

    expected, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (2, 3), 0.5, grad.float()
    )
    leaf = input.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_pool(leaf, rois, (2, 3), 0.5)
        with torch.no_grad():
            inference = roi_pool(input, rois, (2, 3), 0.5)
    assert output.dtype == dtype and inference.dtype == dtype
    assert torch.equal(output, expected.to(dtype))
    assert torch.equal(inference, expected.to(dtype))
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert torch.equal(leaf.grad, expected_grad.to(dtype))


def test_autocast_cpu_leaves_float32_alone() -> None:
    gen = torch.Generator().manual_seed(53)
    input = torch.randn(1, 2, 7, 7, generator=gen)
    rois = random_rois(gen, 1, 5, 7, 7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_pool(input, rois, 3)
    assert output.dtype == torch.float32
    assert torch.equal(output, roi_pool(input, rois, 3))


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=dtype_id)
def test_autocast_cpu_pools_any_mix_of_feature_and_roi_dtypes(
    dtype: torch.dtype, rois_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    """Features and RoIs each float32, float16 or bfloat16: RoIs are widened to float32,
    features pooled in float32, and output and gradient come back in the features' dtype."""
    gen = torch.Generator().manual_seed(73)
    input = torch.randn(2, 3, 9, 8, generator=gen).to(dtype)
    rois = random_rois(gen, 2, 12, 9, 8, scale=0.5).to(rois_dtype)
    grad = torch.randint(-3, 4, (12, 3, 2, 3), generator=gen).to(dtype)
    expected, expected_grad = grad_through(
        roi_pool, input.float(), rois.float(), (2, 3), 0.5, grad.float()
    )

    leaf = input.clone().requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = roi_pool(leaf, rois, (2, 3), 0.5)
        with torch.no_grad():
            inference = roi_pool(input, rois, (2, 3), 0.5)
    assert output.dtype == dtype and inference.dtype == dtype
    assert torch.equal(output, expected.to(dtype))
    assert torch.equal(inference, expected.to(dtype))
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert torch.equal(leaf.grad, expected_grad.to(dtype))


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("boxes_dtype", AUTOCAST_DTYPES, ids=dtype_id)
def test_autocast_cpu_pools_lists_of_boxes_in_any_dtype(boxes_dtype, autocast_dtype) -> None:
    """The list form too: float16 boxes under a bfloat16 autocast (or the other way round)
    must not trip autocast's own rules on the way to a ``[K, 5]`` tensor."""
    gen = torch.Generator().manual_seed(83)
    input = torch.randn(2, 3, 9, 8, generator=gen).half()
    _, boxes = boxes_per_image(random_rois(gen, 2, 12, 9, 8, scale=0.5), 2)
    boxes = [b.to(boxes_dtype) for b in boxes]
    expected = roi_pool(input.float(), [b.float() for b in boxes], (2, 3), 0.5).half()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = roi_pool(input, boxes, (2, 3), 0.5)
    assert output.dtype == torch.float16
    assert torch.equal(output, expected)


def test_mixed_dtypes_outside_autocast_are_refused() -> None:
    """Autocast is what makes a mix acceptable: without it float16 RoIs are an error."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        roi_pool(input, rois.half(), 2)


# -------------------------------------------------------------------------- torch.fx


class _PoolsWithTheModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ROIPool((2, 3), 0.5)

    def forward(self, features: Tensor, rois) -> Tensor:
        return self.pool(torch.relu(features), rois) * 2


class _PoolsWithTheFunction(nn.Module):
    def forward(self, features: Tensor, rois) -> Tensor:
        return roi_pool(torch.relu(features), rois, (2, 3), 0.5) * 2


@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("how", ["ROIPool-module", "function-autowrapped"])
def test_fx_symbolic_trace_keeps_roi_pool_as_one_leaf_call(how: str, rois_form: str) -> None:
    """As with torchvision's ops, ``torch.fx`` records one ``call_function`` to ``roi_pool``
    (the module's forward is traced through; a direct call is a leaf through the usual
    ``autowrap_functions``) instead of tracing into the wrapper, and the traced graph runs
    with either RoI form."""
    if how == "ROIPool-module":
        model = _PoolsWithTheModule()
        traced = torch.fx.symbolic_trace(model)
    else:
        model = _PoolsWithTheFunction()
        tracer = torch.fx.Tracer(autowrap_functions=(roi_pool,))
        traced = torch.fx.GraphModule(model, tracer.trace(model))
    leaves = fx_calls_to(traced, "roi_pool")
    assert len(leaves) == 1
    assert [n.op for n in traced.graph.nodes].count("call_function") == 3  # relu, pool, mul

    gen = torch.Generator().manual_seed(79)
    features = torch.randn(2, 3, 10, 12, generator=gen)
    rois = random_rois(gen, 2, 6, 10, 12, scale=0.5).float()
    rois, boxes = boxes_per_image(rois, 2)
    arg = boxes if rois_form == "list" else rois
    expected, expected_grad = grad_through(
        lambda x, r, *_: model(x, r), features, arg, None, None, torch.ones(6, 3, 2, 3)
    )
    output, grad = grad_through(
        lambda x, r, *_: traced(x, r), features, arg, None, None, torch.ones(6, 3, 2, 3)
    )
    assert torch.equal(output, expected)
    assert torch.equal(grad, expected_grad)
