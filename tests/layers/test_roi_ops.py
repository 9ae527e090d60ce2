"""What RoIPool and RoIAlign share, tested once for both ops (the specs of
``roi_op_specs.py``): torch.compile, torch.fx, ``K = 0``, the module, the argument
errors of the shared checks, the CPU autocast rule and the memory layouts.

Each op's values against its reference, and what only one op has (roi_pool's argmax,
roi_align's ``sampling_ratio`` and ``aligned``), are tested in the op's own files.
"""

from __future__ import annotations

import pytest
import torch
from roi_op_specs import ROI_ALIGN, ROI_ALIGN_SR2, ROI_ALIGN_V2, ROI_POOL, RoIOp, over_ops
from roi_testing import (
    AUTOCAST_DTYPES,
    ERRORS,
    FLOAT_DTYPES,
    MEMORY_FORMAT_IDS,
    MEMORY_FORMATS,
    REDUCED_DTYPES,
    boxes_per_image,
    dtype_id,
    fx_calls_to,
    grad_through,
    input_and_rois,
    random_rois,
    to_format,
)
from torch import Tensor, nn

from detkit.layers import roi_align, roi_pool


def same(actual: Tensor, expected: Tensor) -> None:
    """Equal values of the same dtype."""
    assert actual.dtype == expected.dtype
    assert torch.equal(actual, expected)


# -------------------------------------------------------------------- torch.compile


class TinyDetector(nn.Module):
    def __init__(self, op: RoIOp) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = op.module((2, 3), 0.5)
        self.head = nn.Linear(4 * 2 * 3, 5)

    def forward(self, images: Tensor, rois) -> Tensor:
        features = torch.relu(self.conv(images))
        return self.head(self.pool(features, rois).flatten(1))


def _fresh_model_and_inputs(op: RoIOp, seed: int) -> tuple[TinyDetector, Tensor, Tensor]:
    """A reset torch._dynamo, a TinyDetector with the weights of torch's seed 0, and images
    and RoIs drawn from ``seed``."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(0)
    model = TinyDetector(op)
    images = torch.randn(2, 3, 10, 12, generator=gen)
    return model, images, random_rois(gen, 2, 6, 10, 12, scale=0.5).float()


def _outputs_and_grads(model: nn.Module, images: Tensor, rois) -> list[Tensor]:
    images = images.clone().requires_grad_()
    model.zero_grad()
    model(images, rois).square().sum().backward()
    return [model(images, rois).detach(), images.grad, *(p.grad for p in model.parameters())]


@over_ops(ROI_POOL, ROI_ALIGN_V2)
def test_compile_fullgraph_aot_eager_calls_the_op_and_changes_nothing(op: RoIOp) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    model, images, rois = _fresh_model_and_inputs(op, 37)
    _, boxes = boxes_per_image(rois, 2)
    expected = _outputs_and_grads(model, images, boxes)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    actual = _outputs_and_grads(compiled, images, boxes)
    assert counter.frame_count >= 1
    assert any(f"detkit.{op.name}_forward" in str(g.code) for g in counter.graphs)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


@over_ops(ROI_POOL, ROI_ALIGN_V2)
def test_compile_fullgraph_inductor_matches_eager(op: RoIOp) -> None:
    model, images, rois = _fresh_model_and_inputs(op, 41)
    expected = _outputs_and_grads(model, images, rois)
    actual = _outputs_and_grads(torch.compile(model, fullgraph=True), images, rois)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


# ------------------------------------------------------------------------- torch.fx


class _PoolsWithTheModule(nn.Module):
    def __init__(self, op: RoIOp) -> None:
        super().__init__()
        self.pool = op.module((2, 3), 0.5)

    def forward(self, features: Tensor, rois) -> Tensor:
        return self.pool(torch.relu(features), rois) * 2


class _PoolsWithTheFunction(nn.Module):
    """Calls the function by its name in this module's globals, as user code does: that is
    where ``autowrap_functions`` finds it."""

    def __init__(self, op: RoIOp) -> None:
        super().__init__()
        self.op = op

    def forward(self, features: Tensor, rois) -> Tensor:
        function = roi_pool if self.op.name == "roi_pool" else roi_align
        return function(torch.relu(features), rois, (2, 3), 0.5, *self.op.options) * 2


@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("how", ["module", "function-autowrapped"])
@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_fx_symbolic_trace_keeps_the_op_as_one_leaf_call(op: RoIOp, how: str, rois_form: str):
    """As with torchvision's ops, ``torch.fx`` records one ``call_function`` to the op
    (the module's forward is traced through; a direct call is a leaf through the usual
    ``autowrap_functions``) instead of tracing into the wrapper, and the traced graph runs
    with either RoI form, for a constant and for a random upstream gradient."""
    if how == "module":
        model = _PoolsWithTheModule(op)
        traced = torch.fx.symbolic_trace(model)
    else:
        model = _PoolsWithTheFunction(op)
        tracer = torch.fx.Tracer(autowrap_functions=(op.function,))
        traced = torch.fx.GraphModule(model, tracer.trace(model))
    assert len(fx_calls_to(traced, op.name)) == 1
    assert [n.op for n in traced.graph.nodes].count("call_function") == 3  # relu, pool, mul

    gen = torch.Generator().manual_seed(79)
    features = torch.randn(2, 3, 10, 12, generator=gen)
    rois, boxes = boxes_per_image(random_rois(gen, 2, 6, 10, 12, scale=0.5).float(), 2)
    arg = boxes if rois_form == "list" else rois
    for grad in (torch.ones(6, 3, 2, 3), torch.randn(6, 3, 2, 3, generator=gen)):
        expected = grad_through(lambda x, r, *_: model(x, r), features, arg, None, None, grad)
        actual = grad_through(lambda x, r, *_: traced(x, r), features, arg, None, None, grad)
        for a, e in zip(actual, expected, strict=True):
            assert torch.equal(a, e)


# ---------------------------------------------------------- empty RoIs, the module


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@over_ops(ROI_POOL, ROI_ALIGN, ROI_ALIGN_SR2)
def test_no_rois_give_empty_outputs_and_zero_gradients(
    op: RoIOp, rois_form: str, dtype, memory_format
) -> None:
    input = to_format(torch.randn(2, 3, 5, 6, dtype=dtype), memory_format).requires_grad_()
    if rois_form == "tensor":
        rois = torch.empty(0, 5, dtype=dtype)
    else:
        rois = [torch.empty(0, 4, dtype=dtype), torch.empty(0, 4, dtype=dtype)]
    output = op(input, rois, (3, 4), 0.25)
    assert output.shape == (0, 3, 3, 4)
    assert output.dtype == dtype
    output.sum().backward()
    assert input.grad.shape == input.shape
    assert torch.equal(input.grad, torch.zeros_like(input))
    with torch.no_grad():
        assert op.function(input, rois, 2).shape == (0, 3, 2, 2)
    empty = torch.empty(0, 5, dtype=dtype)
    # roi_pool's raw forward gives an argmax too: empty like the output.
    outputs = op.raw_forward(input.detach(), empty, 1.0, (2, 2))
    assert {t.shape for t in outputs} == {(0, 3, 2, 2)}
    grad_input = op.raw_backward(
        torch.empty(0, 3, 2, 2, dtype=dtype), empty, 1.0, (2, 2), input.shape
    )
    assert torch.equal(grad_input, torch.zeros_like(input))


@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_module_shows_its_arguments_and_pools_as_the_function_does(op: RoIOp) -> None:
    pool = op.module(7, 1 / 16)
    assert pool.output_size == (7, 7)
    text = repr(pool)
    assert "output_size=(7, 7)" in text
    assert "spatial_scale=0.0625" in text
    assert "output_size=(3, 5)" in repr(op.module((3, 5), 0.5))

    gen = torch.Generator().manual_seed(43)
    input = torch.randn(2, 3, 10, 10, generator=gen)
    rois = random_rois(gen, 2, 9, 10, 10, scale=1 / 16).float()
    expected = op(input, rois, (7, 7), 1 / 16)
    assert torch.equal(pool(input, rois), expected)
    assert torch.equal(op(input, rois, 7, 1 / 16), expected)


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "input_shape", [(3, 6, 7), (1, 2, 3, 6, 7), (6,)], ids=["3-D", "5-D", "1-D"]
)
@over_ops(ROI_POOL, ROI_ALIGN)
def test_input_must_be_4d(op: RoIOp, input_shape) -> None:
    _, rois = input_and_rois()
    with pytest.raises(ERRORS, match="4-D"):
        op(torch.randn(input_shape), rois, 2)


@pytest.mark.parametrize("rois_shape", [(1, 4), (1, 6), (5,), (1, 1, 5)])
@over_ops(ROI_POOL, ROI_ALIGN)
def test_rois_must_be_k_by_5(op: RoIOp, rois_shape) -> None:
    input, _ = input_and_rois()
    with pytest.raises(ERRORS, match=r"\[K, 5\]"):
        op(input, torch.zeros(rois_shape), 2)


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 0.5, 1e9, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@over_ops(ROI_POOL, ROI_ALIGN)
def test_bad_batch_index_is_refused_by_function_and_raw_ops(
    op: RoIOp, batch_index: float, dtype
) -> None:
    input, _ = input_and_rois(dtype=dtype)
    rois = torch.tensor([[0.0, 0, 0, 3, 3], [batch_index, 0, 0, 3, 3]], dtype=dtype)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        op(input, rois, 2)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        op.raw_forward(input, rois, 1.0, (2, 2))
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        op.raw_backward(torch.ones(2, 3, 2, 2, dtype=dtype), rois, 1.0, (2, 2), input.shape)


@pytest.mark.parametrize("column", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@over_ops(ROI_POOL, ROI_ALIGN, ROI_ALIGN_SR2)
def test_non_finite_corner_is_refused(op: RoIOp, column: int, value: float) -> None:
    input, rois = input_and_rois()
    rois = torch.cat([torch.tensor([[0.0, 1, 1, 2, 2]]), rois])
    rois[1, column] = value
    with pytest.raises(ValueError, match=r"(?i)finite"):
        op(input, rois, 2)


@over_ops(ROI_POOL, ROI_ALIGN)
def test_device_mismatch_with_meta(op: RoIOp) -> None:
    """CPU-only stand-in for a CPU/CUDA mismatch: the meta device."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)device"):
        op.raw_forward(input, rois.to("meta"), 1.0, (2, 2))
    with pytest.raises(ERRORS, match=r"(?i)device"):
        op.raw_forward(input.to("meta"), rois, 1.0, (2, 2))


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
    ids=dtype_id,
)
@over_ops(ROI_POOL, ROI_ALIGN)
def test_dtype_errors(op: RoIOp, input_dtype, rois_dtype) -> None:
    input = torch.ones(1, 2, 4, 4).to(input_dtype)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]]).to(rois_dtype)
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        op(input, rois, 2)


@pytest.mark.parametrize("output_size", [0, -1, (0, 2), (2, 0), (2, -3), (2,), (2, 2, 2), 2.5])
@over_ops(ROI_POOL, ROI_ALIGN)
def test_bad_output_size_is_refused_by_function_and_module(op: RoIOp, output_size) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="output_size"):
        op(input, rois, output_size)
    with pytest.raises(ERRORS, match="output_size"):
        op.module(output_size, 1.0)


@pytest.mark.parametrize(("pooled_height", "pooled_width"), [(0, 2), (2, 0), (-1, 2)])
@over_ops(ROI_POOL, ROI_ALIGN)
def test_raw_ops_refuse_a_bad_pooled_size(op: RoIOp, pooled_height: int, pooled_width: int):
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        op.raw_forward(input, rois, 1.0, (pooled_height, pooled_width))
    grad = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        op.raw_backward(grad, rois, 1.0, (pooled_height, pooled_width), (2, 3, 6, 7))


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
@over_ops(ROI_POOL, ROI_ALIGN)
def test_bad_spatial_scale_is_refused_everywhere(op: RoIOp, scale: float) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="spatial_scale"):
        op(input, rois, 2, scale)
    with pytest.raises(ERRORS, match="spatial_scale"):
        op.raw_forward(input, rois, scale, (2, 2))
    with pytest.raises(ERRORS, match="spatial_scale"):
        op.module(2, scale)


@pytest.mark.parametrize("num_boxes_tensors", [0, 1, 3])
@over_ops(ROI_POOL, ROI_ALIGN)
def test_list_length_must_match_batch(op: RoIOp, num_boxes_tensors: int) -> None:
    input, _ = input_and_rois(n=2)
    boxes = [torch.tensor([[0.0, 0, 3, 3]])] * num_boxes_tensors
    with pytest.raises(ValueError, match="2 images"):
        op(input, boxes, 2)


@over_ops(ROI_POOL, ROI_ALIGN)
def test_error_messages_name_the_op(op: RoIOp) -> None:
    """Errors of the checks both ops share say which op refused the call."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=op.name):
        op(input, rois[:, :4], 2)
    with pytest.raises(ERRORS, match=op.name):
        op(input, rois, 0)


# ------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("seed", [47, 73])
@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_autocast_cpu_pools_any_mix_of_feature_and_roi_dtypes(
    op: RoIOp, seed: int, dtype: torch.dtype, rois_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    """Features and RoIs each float32, float16 or bfloat16: RoIs are widened to float32,
    features pooled in float32, and output and gradient are the float32 results cast to
    the features' dtype (on two draws of features, RoIs and gradient)."""
    gen = torch.Generator().manual_seed(seed)
    input = torch.randn(2, 3, 9, 8, generator=gen).to(dtype)
    rois = random_rois(gen, 2, 12, 9, 8, scale=0.5).to(rois_dtype)
    grad = op.upstream_grad(gen, (12, 3, 2, 3)).to(dtype)
    expected, expected_grad = grad_through(
        op, input.float(), rois.float(), (2, 3), 0.5, grad.float()
    )

    leaf = input.clone().requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = op(leaf, rois, (2, 3), 0.5)
        with torch.no_grad():
            inference = op(input, rois, (2, 3), 0.5)
    assert output.dtype == dtype and inference.dtype == dtype
    assert torch.equal(output, expected.to(dtype))
    assert torch.equal(inference, expected.to(dtype))
    output.backward(grad)
    assert leaf.grad.dtype == dtype
    assert torch.equal(leaf.grad, expected_grad.to(dtype))


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("boxes_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@over_ops(ROI_POOL, ROI_ALIGN_V2)
def test_autocast_cpu_pools_lists_of_boxes_in_any_dtype(op: RoIOp, boxes_dtype, autocast_dtype):
    """The list form too: float16 boxes under a bfloat16 autocast (or the other way round)
    must not trip autocast's own rules on the way to a ``[K, 5]`` tensor."""
    gen = torch.Generator().manual_seed(83)
    input = torch.randn(2, 3, 9, 8, generator=gen).half()
    _, boxes = boxes_per_image(random_rois(gen, 2, 12, 9, 8, scale=0.5), 2)
    boxes = [b.to(boxes_dtype) for b in boxes]
    expected = op(input.float(), [b.float() for b in boxes], (2, 3), 0.5).half()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = op(input, boxes, (2, 3), 0.5)
    assert output.dtype == torch.float16
    assert torch.equal(output, expected)


@over_ops(ROI_POOL, ROI_ALIGN)
def test_mixed_dtypes_outside_autocast_are_refused(op: RoIOp) -> None:
    """Autocast is what makes a mix acceptable: without it float16 RoIs are an error."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        op(input, rois.half(), 2)


# ------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_output_and_gradient_follow_input_memory_format(op: RoIOp, memory_format, dtype):
    gen = torch.Generator().manual_seed(19)
    input = to_format(torch.randn(2, 5, 9, 10, generator=gen, dtype=dtype), memory_format)
    rois = random_rois(gen, 2, 7, 9, 10).to(dtype)
    leaf = input.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    pooled = op(leaf, rois, (3, 4))
    assert pooled.is_contiguous(memory_format=memory_format)
    pooled.backward(torch.ones_like(pooled))
    assert leaf.grad.is_contiguous(memory_format=memory_format)
    other = torch.channels_last if memory_format == torch.contiguous_format else None
    if other is not None:  # and the values do not depend on the layout
        nhwc = to_format(input, other)
        same(op(nhwc, rois, (3, 4)), pooled.detach())


@over_ops(ROI_POOL, ROI_ALIGN_SR2)
def test_strided_input_and_rois_pool_like_their_copies(op: RoIOp) -> None:
    """Views that are neither NCHW nor channels-last pool like their copies."""
    gen = torch.Generator().manual_seed(17)
    base = torch.randn(2, 6, 9, 14, generator=gen)
    input = base[:, ::2, :, ::2]  # [2, 3, 9, 7], no dense layout
    assert not input.is_contiguous() and not input.is_contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(25, 10)
    wide[:, ::2][:, :5] = random_rois(gen, 2, 25, 9, 7).float()
    rois = wide[:, ::2][:, :5]  # [25, 5] with a column stride of 2
    assert not rois.is_contiguous()
    grad = torch.randn(25, 3, 2, 3, generator=gen)
    output, grad_input = grad_through(op, input, rois, (2, 3), 1.0, grad)
    expected_output, expected_grad = grad_through(
        op, input.contiguous(), rois.contiguous(), (2, 3), 1.0, grad
    )
    same(output, expected_output)
    same(grad_input, expected_grad)
    same(output, op.twin(input.contiguous(), rois.contiguous(), (2, 3), 1.0))
