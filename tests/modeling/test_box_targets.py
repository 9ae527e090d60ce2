"""Box regression, matching and sampling, against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.modeling import Box2BoxTransform, FastRCNNSampler, Matcher, build_sampler

REPO = Path(__file__).resolve().parents[2]


def test_deltas_by_hand() -> None:
    transform = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    target = torch.tensor([[2.0, 4.0, 22.0, 14.0]])  # centre (12, 9), size (20, 10)
    expected = torch.tensor([[10 * 7 / 10, 10 * -1 / 20, 5 * math.log(2.0), 5 * math.log(0.5)]])
    torch.testing.assert_close(transform.get_deltas(src, target), expected)


def test_encode_decode_round_trip_per_class() -> None:
    gen = torch.Generator().manual_seed(0)
    transform = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    xy = torch.rand(50, 2, generator=gen) * 100
    src = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=gen) * 50], dim=1)
    xy = torch.rand(50, 2, generator=gen) * 100
    target = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=gen) * 50], dim=1)
    deltas = transform.get_deltas(src, target)
    three_classes = torch.cat([torch.zeros_like(deltas), deltas, deltas], dim=1)
    decoded = transform.apply_deltas(three_classes, src)
    assert decoded.shape == (50, 12)
    torch.testing.assert_close(decoded[:, 4:8], target, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(decoded[:, :4], src, rtol=1e-5, atol=1e-4)


def test_huge_scale_deltas_are_clamped() -> None:
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    out = transform.apply_deltas(
        torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0, 16, 16]])
    )
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_matcher_bands_of_fast_rcnn() -> None:
    matcher = Matcher([0.1, 0.5], [-1, 0, 1])
    iou = torch.tensor([[0.05, 0.1, 0.3, 0.5, 0.9, 0.49], [0.0, 0.0, 0.4, 0.2, 0.95, 0.0]])
    matches, labels = matcher(iou)
    assert labels.tolist() == [-1, 0, 0, 1, 1, 0]
    assert matches.tolist() == [0, 0, 1, 0, 1, 0]
    matches, labels = matcher(torch.zeros(0, 3))
    assert labels.tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="bands"):
        Matcher([0.5], [0, 1, 2])
    with pytest.raises(ValueError, match="rise"):
        Matcher([0.5, 0.1], [-1, 0, 1])


def test_sampler_fractions_and_bands() -> None:
    labels = torch.tensor([1] * 30 + [0] * 100 + [-1] * 20)
    fg, bg = FastRCNNSampler(64, 0.25).sample_labels(labels, torch.Generator().manual_seed(0))
    assert len(fg) == 16 and len(bg) == 48
    assert (labels[fg] == 1).all() and (labels[bg] == 0).all()
    assert len(set(fg.tolist())) == 16 and len(set(bg.tolist())) == 48
    few = torch.tensor([1] * 3 + [0] * 100)
    fg, bg = FastRCNNSampler(64, 0.25).sample_labels(few)
    assert (len(fg), len(bg)) == (3, 61)  # background fills the batch
    fg, bg = FastRCNNSampler(64, 0.25).sample_labels(torch.tensor([1] * 3 + [0] * 5 + [-1] * 90))
    assert (len(fg), len(bg)) == (3, 5)


def test_sampler_built_from_config() -> None:
    cfg = load_config(
        REPO / "configs" / "Base-FastRCNN.yaml", ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=8"]
    )
    sampler = build_sampler(cfg)
    assert isinstance(sampler, FastRCNNSampler)
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (8, 0.25)
