"""The RoI ops: hostile tensors refused naming the argument, never read out of bounds.

A ValueError or TypeError says which argument is wrong: detkit's compiled ops
(`detkit.layers.roi_pool`, `roi_align`) check every argument before a kernel runs: shapes,
dtypes, devices, a finite positive scale and pooled size, and each RoI's batch index (an
integer inside the batch) and coordinates (finite). An empty RoI list gives an empty output; a
degenerate (zero-area or inverted) RoI is pooled as torchvision pools it.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from detkit.layers import roi_align, roi_pool

OPS = {
    "roi_pool": lambda x, rois, **kw: roi_pool(x, rois, 2, **kw),
    "roi_align": lambda x, rois, **kw: roi_align(x, rois, 2, sampling_ratio=2, **kw),
}
TORCHVISION = {  # the reference semantics
    "roi_pool": lambda x, rois: torchvision.ops.roi_pool(x, rois, 2),
    "roi_align": lambda x, rois: torchvision.ops.roi_align(x, rois, 2, sampling_ratio=2),
}


def features() -> torch.Tensor:
    return torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)


@pytest.mark.parametrize("op", OPS)
def test_batch_index_out_of_range(op: str) -> None:
    """An RoI whose batch index is past the batch (`5` for 2 images) → ValueError naming the row
    and the valid range, no out-of-bounds read."""
    rois = torch.tensor([[5.0, 0, 0, 4, 4]])
    with pytest.raises(ValueError, match=r"rois\[0, 0\] = 5 is not a valid batch index"):
        OPS[op](features(), rois)


@pytest.mark.parametrize("op", OPS)
def test_fractional_batch_index(op: str) -> None:
    """An RoI whose batch index is not an integer (`0.5`) → ValueError naming the row."""
    with pytest.raises(ValueError, match="not a valid batch index"):
        OPS[op](features(), torch.tensor([[0.5, 0, 0, 4, 4]]))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_coordinate(op: str, bad: float) -> None:
    """An RoI with a NaN or infinite coordinate → ValueError naming the row."""
    rois = torch.tensor([[0.0, 0, 0, 4, 4], [1.0, 0, bad, 4, 4]])
    with pytest.raises(ValueError, match=r"rois\[1\] .* not finite"):
        OPS[op](features(), rois)


@pytest.mark.parametrize("op", OPS)
def test_rois_with_four_columns(op: str) -> None:
    """A `[K, 4]` tensor passed where `[K, 5]` rows are expected → ValueError showing the shape."""
    with pytest.raises(ValueError, match=r"rois must be a Tensor\[K, 5\]"):
        OPS[op](features(), torch.zeros(3, 4))


@pytest.mark.parametrize("op", OPS)
def test_three_dimensional_input(op: str) -> None:
    """A 3-D feature map (no batch dimension) → ValueError asking for `[N, C, H, W]`."""
    with pytest.raises((ValueError, RuntimeError), match="4-D"):
        OPS[op](features()[0], torch.tensor([[0.0, 0, 0, 4, 4]]))


@pytest.mark.parametrize("op", OPS)
def test_integer_features(op: str) -> None:
    """An integer feature map → refused: a floating-point dtype is needed."""
    with pytest.raises((TypeError, RuntimeError), match="floating-point"):
        OPS[op](features().long(), torch.tensor([[0, 0, 0, 4, 4]]))


@pytest.mark.parametrize("op", OPS)
def test_mixed_dtypes(op: str) -> None:
    """float64 RoIs on a float32 map → refused, naming both dtypes."""
    with pytest.raises((TypeError, RuntimeError), match="dtype"):
        OPS[op](features(), torch.tensor([[0.0, 0, 0, 4, 4]], dtype=torch.float64))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_spatial_scale(op: str, scale: float) -> None:
    """A spatial scale that is 0, negative or NaN → ValueError naming it."""
    with pytest.raises(ValueError, match="spatial_scale must be a positive finite number"):
        OPS[op](features(), torch.tensor([[0.0, 0, 0, 4, 4]]), spatial_scale=scale)


@pytest.mark.parametrize("op", OPS)
def test_zero_pooled_size(op: str) -> None:
    """A pooled size of 0 → ValueError naming `output_size`."""
    call = roi_pool if op == "roi_pool" else roi_align
    with pytest.raises(ValueError, match=f"{op}: output_size must be a positive int"):
        call(features(), torch.tensor([[0.0, 0, 0, 4, 4]]), (0, 2))


@pytest.mark.parametrize("op", OPS)
def test_no_rois(op: str) -> None:
    """No RoI at all → an empty `[0, C, h, w]` output, not an error or garbage."""
    output = OPS[op](features(), torch.zeros(0, 5))
    assert output.shape == (0, 3, 2, 2)


@pytest.mark.parametrize("op", OPS)
def test_inverted_and_zero_area_rois(op: str) -> None:
    """Inverted (x2 < x1) and zero-area RoIs → pooled exactly as torchvision pools them."""
    rois = torch.tensor([[0.0, 6, 6, 2, 2], [1.0, 3, 3, 3, 3]])
    torch.testing.assert_close(OPS[op](features(), rois), TORCHVISION[op](features(), rois))


@pytest.mark.parametrize("op", OPS)
def test_boxes_far_outside_the_map(op: str) -> None:
    """An RoI far outside the feature map (`x1 = 1e6`) → finite values as torchvision gives, no
    crash."""
    rois = torch.tensor([[0.0, 1e6, 1e6, 1e6 + 10, 1e6 + 10], [0.0, -50, -50, -10, -10]])
    mine = OPS[op](features(), rois)
    assert torch.isfinite(mine).all()
    torch.testing.assert_close(mine, TORCHVISION[op](features(), rois))


@pytest.mark.parametrize("op", OPS)
def test_box_list_for_the_wrong_number_of_images(op: str) -> None:
    """One box tensor for a batch of two images → ValueError: one `Tensor[Ki, 4]` per image."""
    with pytest.raises(ValueError, match="got 1 box tensors for 2 images"):
        OPS[op](features(), [torch.tensor([[0.0, 0, 4, 4]])])
