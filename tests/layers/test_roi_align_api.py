"""Tests of RoIAlign's API around the values: gradcheck and opcheck (fed by the case table),
torch.compile, torch.fx, the module, argument errors and CPU autocast.
"""

from __future__ import annotations

import pytest
import torch
from roi_align_cases import (
    GRADCHECK_CASES,
    OPCHECK_CASES,
    AlignCase,
    build_case,
    detkit_backward,
    detkit_forward,
    with_options,
)
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

from detkit.layers import ROIAlign, roi_align

# ----------------------------------------------------- gradcheck, opcheck (the table)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", GRADCHECK_CASES)
def test_gradcheck(name: str, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float64, memory_format)
    input.requires_grad_()
    pool = with_options(roi_align, case)
    # Fast mode (random projections of the Jacobian): the exact gradient values are the
    # business of the reference tests; this checks the autograd wiring, in seconds.
    assert torch.autograd.gradcheck(
        lambda x: pool(x, rois, case.output_size, case.spatial_scale), (input,), fast_mode=True
    )


def test_gradcheck_list_form_through_the_module() -> None:
    case = build_case("outside/sr=2/aligned")  # small enough for the full Jacobian
    input, rois = case.cast(torch.float64)
    _, boxes = boxes_per_image(rois, input.shape[0])
    module = ROIAlign(case.output_size, case.spatial_scale, case.sampling_ratio, case.aligned)
    assert torch.autograd.gradcheck(lambda x: module(x, boxes), (input.requires_grad_(),))


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", OPCHECK_CASES)
def test_opcheck_forward(name: str, memory_format, requires_grad: bool) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float32, memory_format)
    input.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.detkit.roi_align_forward.default, (input, rois, *case.options))


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
@pytest.mark.parametrize("name", OPCHECK_CASES)
def test_opcheck_backward(name: str, memory_format) -> None:
    case = build_case(name)
    input, rois = case.cast(torch.float32, memory_format)
    grad = case.grad_output(torch.float32, memory_format)
    torch.library.opcheck(
        torch.ops.detkit.roi_align_backward.default,
        (grad, rois, *case.options, *input.shape),
    )


def test_opcheck_without_rois() -> None:
    input = torch.randn(2, 3, 5, 6, requires_grad=True)
    rois = torch.empty(0, 5)
    torch.library.opcheck(
        torch.ops.detkit.roi_align_forward.default, (input, rois, 1.0, 2, 2, 0, True)
    )
    torch.library.opcheck(
        torch.ops.detkit.roi_align_backward.default,
        (torch.empty(0, 3, 2, 2), rois, 1.0, 2, 2, 0, True, 2, 3, 5, 6),
    )


# -------------------------------------------------------------------- torch.compile


class TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = ROIAlign((2, 3), 0.5, sampling_ratio=0, aligned=True)
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
    _, boxes = boxes_per_image(rois, 2)
    expected = _outputs_and_grads(model, images, boxes)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    actual = _outputs_and_grads(compiled, images, boxes)
    assert counter.frame_count >= 1
    assert any("detkit.roi_align_forward" in str(g.code) for g in counter.graphs)
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


# ------------------------------------------------------------------------- torch.fx


class _PoolsWithTheModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ROIAlign((2, 3), 0.5, 2, True)

    def forward(self, features: Tensor, rois) -> Tensor:
        return self.pool(torch.relu(features), rois) * 2


class _PoolsWithTheFunction(nn.Module):
    def forward(self, features: Tensor, rois) -> Tensor:
        return roi_align(torch.relu(features), rois, (2, 3), 0.5, 2, True) * 2


@pytest.mark.parametrize("rois_form", ["tensor", "list"])
@pytest.mark.parametrize("how", ["ROIAlign-module", "function-autowrapped"])
def test_fx_symbolic_trace_keeps_roi_align_as_one_leaf_call(how: str, rois_form: str) -> None:
    """As with torchvision's ops, ``torch.fx`` records one ``call_function`` to ``roi_align``
    (the module's forward is traced through; a direct call is a leaf through the usual
    ``autowrap_functions``) instead of tracing into the wrapper, and the traced graph runs
    with either RoI form."""
    if how == "ROIAlign-module":
        model = _PoolsWithTheModule()
        traced = torch.fx.symbolic_trace(model)
    else:
        model = _PoolsWithTheFunction()
        tracer = torch.fx.Tracer(autowrap_functions=(roi_align,))
        traced = torch.fx.GraphModule(model, tracer.trace(model))
    assert len(fx_calls_to(traced, "roi_align")) == 1
    assert [n.op for n in traced.graph.nodes].count("call_function") == 3  # relu, pool, mul

    gen = torch.Generator().manual_seed(79)
    features = torch.randn(2, 3, 10, 12, generator=gen)
    rois, boxes = boxes_per_image(random_rois(gen, 2, 6, 10, 12, scale=0.5).float(), 2)
    arg = boxes if rois_form == "list" else rois
    grad = torch.randn(6, 3, 2, 3, generator=gen)
    expected = grad_through(lambda x, r, *_: model(x, r), features, arg, None, None, grad)
    actual = grad_through(lambda x, r, *_: traced(x, r), features, arg, None, None, grad)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


# ----------------------------------------------------------------------- the module


def test_module() -> None:
    pool = ROIAlign(7, 1 / 16, 2, True)
    assert pool.output_size == (7, 7)
    text = repr(pool)
    for part in ("output_size=(7, 7)", "spatial_scale=0.0625", "sampling_ratio=2", "aligned=True"):
        assert part in text
    assert "sampling_ratio=-1" in repr(ROIAlign((3, 5), 0.5))
    assert "aligned=False" in repr(ROIAlign((3, 5), 0.5))

    gen = torch.Generator().manual_seed(43)
    input = torch.randn(2, 3, 10, 10, generator=gen)
    rois = random_rois(gen, 2, 9, 10, 10, scale=1 / 16).float()
    expected = roi_align(input, rois, (7, 7), 1 / 16, 2, True)
    assert torch.equal(pool(input, rois), expected)
    assert torch.equal(roi_align(input, rois, 7, 1 / 16, 2, True), expected)
    assert not torch.equal(ROIAlign(7, 1 / 16, 2, False)(input, rois), expected)


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "input_shape", [(3, 6, 7), (1, 2, 3, 6, 7), (6,)], ids=["3-D", "5-D", "1-D"]
)
def test_input_must_be_4d(input_shape) -> None:
    _, rois = input_and_rois()
    with pytest.raises(ERRORS, match="4-D"):
        roi_align(torch.randn(input_shape), rois, 2)


@pytest.mark.parametrize("rois_shape", [(1, 4), (1, 6), (5,), (1, 1, 5)])
def test_rois_must_be_k_by_5(rois_shape) -> None:
    input, _ = input_and_rois()
    with pytest.raises(ERRORS, match=r"\[K, 5\]"):
        roi_align(input, torch.zeros(rois_shape), 2)


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 0.5, 1e9, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_bad_batch_index(batch_index: float, dtype) -> None:
    input, _ = input_and_rois(dtype=dtype)
    rois = torch.tensor([[0.0, 0, 0, 3, 3], [batch_index, 0, 0, 3, 3]], dtype=dtype)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        roi_align(input, rois, 2)
    case = AlignCase(input, rois, (2, 2), 1.0, -1, False)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        detkit_forward(input, rois, case)
    with pytest.raises(ValueError, match=r"(?i)batch index"):
        detkit_backward(torch.ones(2, 3, 2, 2, dtype=dtype), rois, case, input.shape)


@pytest.mark.parametrize("column", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_corner(column: int, value: float) -> None:
    input, rois = input_and_rois()
    rois = torch.cat([torch.tensor([[0.0, 1, 1, 2, 2]]), rois])
    rois[1, column] = value
    with pytest.raises(ValueError, match=r"(?i)finite"):
        roi_align(input, rois, 2)
    with pytest.raises(ValueError, match=r"(?i)finite"):
        roi_align(input, rois, 2, 1.0, 2, True)


def test_device_mismatch_with_meta() -> None:
    """CPU-only stand-in for a CPU/CUDA mismatch: the meta device."""
    input, rois = input_and_rois()
    case = AlignCase(input, rois, (2, 2), 1.0, -1, False)
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input, rois.to("meta"), case)
    with pytest.raises(ERRORS, match=r"(?i)device"):
        detkit_forward(input.to("meta"), rois, case)


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
def test_dtype_errors(input_dtype, rois_dtype) -> None:
    input = torch.ones(1, 2, 4, 4).to(input_dtype)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]]).to(rois_dtype)
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        roi_align(input, rois, 2)


@pytest.mark.parametrize("output_size", [0, -1, (0, 2), (2, 0), (2, -3), (2,), (2, 2, 2), 2.5])
def test_bad_output_size(output_size) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="output_size"):
        roi_align(input, rois, output_size)
    with pytest.raises(ERRORS, match="output_size"):
        ROIAlign(output_size, 1.0)


@pytest.mark.parametrize(("pooled_height", "pooled_width"), [(0, 2), (2, 0), (-1, 2)])
def test_raw_op_bad_pooled_size(pooled_height: int, pooled_width: int) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_align_forward(input, rois, 1.0, pooled_height, pooled_width, -1, False)
    grad = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ERRORS, match=r"(?i)pooled"):
        torch.ops.detkit.roi_align_backward(
            grad, rois, 1.0, pooled_height, pooled_width, -1, False, 2, 3, 6, 7
        )


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_bad_spatial_scale(scale: float) -> None:
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="spatial_scale"):
        roi_align(input, rois, 2, scale)
    with pytest.raises(ERRORS, match="spatial_scale"):
        torch.ops.detkit.roi_align_forward(input, rois, scale, 2, 2, -1, False)
    with pytest.raises(ERRORS, match="spatial_scale"):
        ROIAlign(2, scale)


@pytest.mark.parametrize("sampling_ratio", [2.0, 1.5, "2", None])
def test_sampling_ratio_must_be_an_int(sampling_ratio) -> None:
    input, rois = input_and_rois()
    with pytest.raises((*ERRORS, TypeError), match="sampling_ratio"):
        roi_align(input, rois, 2, 1.0, sampling_ratio)
    with pytest.raises((*ERRORS, TypeError), match="sampling_ratio"):
        ROIAlign(2, 1.0, sampling_ratio)


@pytest.mark.parametrize("num_boxes_tensors", [0, 1, 3])
def test_list_length_must_match_batch(num_boxes_tensors: int) -> None:
    input, _ = input_and_rois(n=2)
    boxes = [torch.tensor([[0.0, 0, 3, 3]])] * num_boxes_tensors
    with pytest.raises(ValueError, match="2 images"):
        roi_align(input, boxes, 2)


def test_error_messages_name_roi_align() -> None:
    """Errors of the shared checks say which op refused the call."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match="roi_align"):
        roi_align(input, rois[:, :4], 2)
    with pytest.raises(ERRORS, match="roi_align"):
        roi_align(input, rois, 0)


# ------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("autocast_dtype", REDUCED_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rois_dtype", AUTOCAST_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=dtype_id)
def test_autocast_cpu_pools_any_mix_of_feature_and_roi_dtypes(
    dtype: torch.dtype, rois_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    """Features and RoIs each float32, float16 or bfloat16: RoIs are widened to float32,
    features pooled in float32, and output and gradient are the float32 results cast to
    the features' dtype."""
    gen = torch.Generator().manual_seed(47)
    input = torch.randn(2, 3, 9, 8, generator=gen).to(dtype)
    rois = random_rois(gen, 2, 12, 9, 8, scale=0.5).to(rois_dtype)
    grad = torch.randn(12, 3, 2, 3, generator=gen).to(dtype)
    case = AlignCase(input, rois, (2, 3), 0.5, 2, True)
    pool = with_options(roi_align, case)
    expected, expected_grad = grad_through(
        pool, input.float(), rois.float(), (2, 3), 0.5, grad.float()
    )

    leaf = input.clone().requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = pool(leaf, rois, (2, 3), 0.5)
        with torch.no_grad():
            inference = pool(input, rois, (2, 3), 0.5)
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
    expected = roi_align(input.float(), [b.float() for b in boxes], (2, 3), 0.5, 0, True).half()
    with torch.autocast("cpu", dtype=autocast_dtype):
        output = roi_align(input, boxes, (2, 3), 0.5, 0, True)
    assert output.dtype == torch.float16
    assert torch.equal(output, expected)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=MEMORY_FORMAT_IDS)
def test_autocast_cpu_keeps_channels_last(memory_format) -> None:
    gen = torch.Generator().manual_seed(53)
    input = to_format(torch.randn(1, 4, 7, 7, generator=gen).bfloat16(), memory_format)
    rois = random_rois(gen, 1, 5, 7, 7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_align(input, rois, 3, 1.0, 2, False)
    assert output.dtype == torch.bfloat16
    assert output.is_contiguous(memory_format=memory_format)


def test_mixed_dtypes_outside_autocast_are_refused() -> None:
    """Autocast is what makes a mix acceptable: without it float16 RoIs are an error."""
    input, rois = input_and_rois()
    with pytest.raises(ERRORS, match=r"(?i)dtype"):
        roi_align(input, rois.half(), 2)
