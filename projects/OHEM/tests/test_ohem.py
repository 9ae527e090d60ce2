"""OHEM's sampler: hard-example selection against hand-worked cases, its config keys and
refusals, the RoIs that reach the loss in a real model, and a short run of its train_net.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from ohem import OHEMSampler, add_ohem_config, select_hard_examples
from ohem.config import OHEMKeys

from detkit.config import ConfigError, get_default_config, load_config
from detkit.config.reference import generated_part, markdown_reference
from detkit.data.datasets.shapes import ensure_shapes
from detkit.modeling import SAMPLER_REGISTRY, build_model
from detkit.modeling.sampling import SamplingContext
from detkit.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[3]
PROJECT = REPO / "projects" / "OHEM"
SHAPES_OHEM = PROJECT / "configs" / "shapes_ohem.yaml"
NUM_CLASSES = 3  # shapes: circle, square, triangle; background is 3
TINY = [
    "MODEL.SMALL_CONVNET.CHANNELS=[8, 16]",
    "MODEL.ROI_BOX_HEAD.FC_DIM=32",
    "MODEL.CHANNELS_LAST=false",
]


def ohem_config(*overrides: str, path: Path = SHAPES_OHEM):
    return load_config(path, overrides, defaults=add_ohem_config(get_default_config()))


# --- selection by hand ---------------------------------------------------------------------

# Seven RoIs of one image in no particular order, with their losses. Ranked by loss: 3, 1, 6, 4,
# 0, 5, 2. IoU with RoI 3 ([0, 0, 10, 10], area 100): RoI 1 100/120 = 0.83, RoI 6 100/140 = 0.71,
# RoI 4 100/150 = 0.67. RoI 5 is an exact copy of RoI 0 (IoU 1), RoI 2 overlaps nothing.
HAND_BOXES = torch.tensor(
    [
        [50.0, 50, 60, 60],
        [0, 0, 10, 12],
        [80, 0, 90, 10],
        [0, 0, 10, 10],
        [0, 0, 10, 15],
        [50, 50, 60, 60],
        [0, 0, 10, 14],
    ]
)
HAND_LOSSES = torch.tensor([0.3, 0.8, 0.1, 0.9, 0.6, 0.2, 0.7])


@pytest.mark.parametrize(
    ("budget", "nms_thresh", "expected"),
    [
        # 1 and 6 (2nd and 3rd hardest) overlap 3 by more than 0.7, 5 copies 0: suppressed
        (64, 0.7, [3, 4, 0, 2]),
        (3, 0.7, [3, 4, 0]),  # the per-image budget cuts the ranking after NMS
        (64, 0.65, [3, 0, 2]),  # 4 (IoU 0.67 with 3) goes too
        (64, 1.0, [3, 1, 6, 4, 0, 5, 2]),  # nothing overlaps by more than 1: the ranking alone
    ],
)
def test_hardest_rois_after_nms_by_hand(budget: int, nms_thresh: float, expected: list) -> None:
    kept = select_hard_examples(HAND_BOXES, HAND_LOSSES, budget, nms_thresh)
    assert kept.tolist() == expected


def test_nms_per_class_keeps_overlapping_rois_of_different_labels() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11]])  # IoU 100/110 = 0.91
    losses = torch.tensor([0.9, 0.5])
    classes = torch.tensor([1, NUM_CLASSES])  # a foreground RoI and a background one
    assert select_hard_examples(boxes, losses, 64, 0.7).tolist() == [0]
    assert select_hard_examples(boxes, losses, 64, 0.7, classes).tolist() == [0, 1]
    same_class = torch.tensor([1, 1])
    assert select_hard_examples(boxes, losses, 64, 0.7, same_class).tolist() == [0]


def test_equal_losses_rank_in_index_order() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    assert select_hard_examples(boxes, torch.ones(3), 2, 0.7).tolist() == [0, 1]


# --- the sampler over labelled proposals ---------------------------------------------------


def labelled(boxes: list, labels: list, cls_loss: list, box_loss: list) -> Instances:
    """One image's labelled proposals as the RoI heads give them to a sampler, plus the losses
    the fake context below reports for them."""
    labels = torch.tensor(labels, dtype=torch.int8)
    classes = torch.where(labels == 1, 0, NUM_CLASSES)
    classes[labels == -1] = -1
    tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Instances(
        (100, 100),
        proposal_boxes=Boxes(tensor),
        match_labels=labels,
        gt_classes=classes,
        gt_boxes=Boxes(tensor.clone()),
        cls_loss=torch.tensor(cls_loss, dtype=torch.float32),
        box_loss=torch.tensor(box_loss, dtype=torch.float32),
    )


class FakeContext(SamplingContext):
    """Reports the losses stored with the RoIs and records each call's RoIs per image."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        super().__init__(self.losses, NUM_CLASSES)

    def losses(self, rois: list[Instances]) -> dict[str, torch.Tensor]:
        self.calls.append([len(image) for image in rois])
        assert all(bool((image.match_labels >= 0).all()) for image in rois)
        return {
            "loss_cls": torch.cat([image.cls_loss for image in rois]),
            "loss_box_reg": torch.cat([image.box_loss for image in rois]),
        }


def far_apart(count: int) -> list:
    """``count`` boxes that do not overlap."""
    return [[20.0 * i, 0, 20 * i + 10, 10] for i in range(count)]


@pytest.mark.parametrize(("box_loss", "expected"), [(0.5, [1]), (0.3, [0])])
def test_the_ranking_adds_the_box_loss(box_loss: float, expected: list) -> None:
    # RoI 0: background, classification loss 1.0. RoI 1: foreground, 0.6 plus its box loss,
    # 1.1 or 0.9: it is the harder one only when the box loss counts.
    image = labelled(far_apart(2), [0, 1], [1.0, 0.6], [0.0, box_loss])
    assert OHEMSampler(1)([image], FakeContext())[0].tolist() == expected


def test_per_image_budget_ignored_rois_no_ground_truth_and_empty_images() -> None:
    images = [
        # five candidates and an ignored RoI with the highest loss, which is never a candidate
        labelled(far_apart(6), [0, 1, 0, -1, 1, 0], [0.2, 0.5, 0.9, 9.0, 0.1, 0.4], [0.0] * 6),
        labelled(far_apart(2), [1, 0], [0.1, 0.3], [0.1, 0.0]),  # fewer than the budget
        labelled(far_apart(4), [0, 0, 0, 0], [0.3, 0.1, 0.4, 0.2], [0.0] * 4),  # no object
        labelled([], [], [], []),  # no proposal at all
    ]
    context = FakeContext()
    picked = OHEMSampler(3)(images, context)
    assert [p.tolist() for p in picked] == [[2, 1, 5], [1, 0], [2, 0, 3], []]
    assert context.calls == [[5, 2, 4, 0]]  # one read-only pass over every image's candidates
    assert all(p.dtype == torch.int64 for p in picked)


def test_images_without_rois_need_no_forward() -> None:
    context = FakeContext()
    picked = OHEMSampler(3)([labelled([], [], [], []), labelled([], [], [], [])], context)
    assert [p.tolist() for p in picked] == [[], []] and context.calls == []


# --- config, registry, refusals --------------------------------------------------------------


def test_keys_defaults_typo_and_type() -> None:
    cfg = ohem_config()
    assert cfg.MODEL.OHEM.NMS_THRESH == 0.7 and cfg.MODEL.OHEM.NMS_PER_CLASS is False
    with pytest.raises(ConfigError, match=r"did you mean MODEL\.OHEM\.NMS_THRESH\?"):
        ohem_config("MODEL.OHEM.NMS_TRESH=0.5")
    with pytest.raises(ConfigError, match=r"MODEL\.OHEM\.NMS_THRESH takes a float"):
        ohem_config("MODEL.OHEM.NMS_THRESH=high")
    with pytest.raises(ConfigError, match=r"MODEL\.OHEM\.NMS_THRESH is already defined"):
        add_ohem_config(add_ohem_config(get_default_config()))


def test_the_config_picks_the_sampler_from_the_registry() -> None:
    assert SAMPLER_REGISTRY.get("OHEMSampler") is OHEMSampler
    cfg = ohem_config(
        *TINY,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=16",
        "MODEL.OHEM.NMS_THRESH=0.5",
        "MODEL.OHEM.NMS_PER_CLASS=true",
    )
    sampler = build_model(cfg).roi_heads.sampler
    assert isinstance(sampler, OHEMSampler)
    assert (sampler.batch_size_per_image, sampler.nms_thresh, sampler.nms_per_class) == (
        16,
        0.5,
        True,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["MODEL.ROI_HEADS.IOU_THRESHOLDS=[0.1, 0.5]", "MODEL.ROI_HEADS.IOU_LABELS=[-1, 0, 1]"],
        ["MODEL.ROI_HEADS.BG_IOU_LO=0.1"],  # the deprecated key, read as the bands above
    ],
    ids=["bands", "deprecated-BG_IOU_LO"],
)
def test_bands_that_ignore_rois_are_refused(overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        build_model(ohem_config(*TINY, *overrides))
    message = str(error.value)
    assert "MODEL.ROI_HEADS.IOU_THRESHOLDS [0.1, 0.5] with IOU_LABELS [-1, 0, 1]" in message
    assert "BG_THRESH_LO = 0" in message and "IOU_LABELS: [0, 1]" in message


def test_every_problem_is_reported_at_once() -> None:
    cfg = ohem_config(
        "MODEL.ROI_HEADS.IOU_LABELS=[-1, 1]",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=0",
        "MODEL.OHEM.NMS_THRESH=1.5",
    )
    with pytest.raises(ConfigError) as error:
        OHEMSampler.from_config(cfg)
    message = str(error.value)
    assert "IOU_LABELS [-1, 1]" in message
    assert "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE must be positive, got 0" in message
    assert "MODEL.OHEM.NMS_THRESH must be in [0, 1], got 1.5" in message


def test_a_config_without_the_project_keys_is_refused() -> None:
    cfg = load_config(SHAPES_OHEM)  # detkit's defaults only
    with pytest.raises(ConfigError, match=r"no MODEL\.OHEM keys.*add_ohem_config"):
        OHEMSampler.from_config(cfg)


def test_plain_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size_per_image must be positive"):
        OHEMSampler(0)
    with pytest.raises(ValueError, match=r"nms_thresh in \[0, 1\]"):
        OHEMSampler(64, nms_thresh=-0.1)


# --- in the model ----------------------------------------------------------------------------


def iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def reference_hardest(boxes: list, losses: list, budget: int, thresh: float) -> list[int]:
    """Greedy NMS over the RoIs ranked by loss, written out: the independent reference."""
    kept: list[int] = []
    for i in sorted(range(len(losses)), key=lambda i: (-losses[i], i)):
        if all(iou(boxes[i], boxes[j]) <= thresh for j in kept):
            kept.append(i)
    return kept[:budget]


def training_input(height: int, width: int, gt: list, proposals: list) -> dict:
    return {
        "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8),
        "proposals": Instances(
            (height, width),
            proposal_boxes=Boxes(torch.tensor(proposals).reshape(-1, 4)),
            objectness_logits=torch.zeros(len(proposals)),
        ),
        "instances": Instances(
            (height, width),
            gt_boxes=Boxes(torch.tensor(gt)),
            gt_classes=torch.arange(len(gt)) % NUM_CLASSES,
        ),
    }


class RecordingSampler:
    """Wraps the model's sampler, keeping what it was given and what it returned."""

    def __init__(self, sampler: OHEMSampler) -> None:
        self.sampler = sampler

    def __call__(self, proposals: list[Instances], context: SamplingContext) -> list:
        self.proposals, self.context = proposals, context
        self.picked = self.sampler(proposals, context)
        return self.picked


def test_only_the_hardest_rois_reach_the_loss_and_take_gradient() -> None:
    budget = 8
    torch.manual_seed(0)
    model = build_model(ohem_config(*TINY, f"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE={budget}"))
    model.train()  # shapes' box head has no dropout: the read-only pass is repeatable
    recorder = RecordingSampler(model.roi_heads.sampler)
    model.roi_heads.sampler = recorder
    calls = []

    def record(module, inputs, output) -> None:
        pooled = inputs[0]
        if pooled.requires_grad:
            pooled.retain_grad()
        calls.append((pooled, torch.is_grad_enabled(), output.requires_grad))

    model.roi_heads.box_head.register_forward_hook(record)

    generator = torch.Generator().manual_seed(3)
    corners = torch.rand(40, 2, generator=generator) * torch.tensor([60.0, 40])
    sizes = 8 + torch.rand(40, 2, generator=generator) * 30
    many = torch.cat([corners, corners + sizes], dim=1).tolist()  # overlapping and not
    inputs = [
        training_input(64, 96, [[4.0, 4, 40, 44], [50, 10, 90, 50]], many),
        training_input(72, 64, [[10.0, 10, 50, 60]], [[8.0, 12, 52, 58], [0, 0, 20, 20]]),
    ]
    losses = model(inputs)
    sum(losses.values()).backward()

    # the read-only pass: every labelled RoI, without gradient; then only the picked ones
    labelled = recorder.proposals
    (read_only, read_grad, read_output_grad), (trained, train_grad, _) = calls
    assert len(read_only) == sum(len(p) for p in labelled) and len(labelled[0]) > budget
    assert not read_grad and not read_output_grad

    expected = []
    reference_losses = recorder.context.roi_losses(labelled)
    per_roi = (reference_losses["loss_cls"] + reference_losses["loss_box_reg"]).split(
        [len(p) for p in labelled]
    )
    for image, image_losses in zip(labelled, per_roi, strict=True):
        boxes = image.proposal_boxes.tensor.tolist()
        expected.append(reference_hardest(boxes, image_losses.tolist(), budget, 0.7))
    assert [p.tolist() for p in recorder.picked] == expected
    assert len(expected[0]) == budget and 0 < len(expected[1]) < budget  # both cases occur
    assert len(expected[0]) < len(labelled[0])  # and NMS or the budget dropped some

    assert train_grad and len(trained) == sum(len(e) for e in expected)
    assert trained.grad is not None and bool(torch.isfinite(trained.grad).all())
    assert all(math.isfinite(v.item()) for v in losses.values())


# --- projects/OHEM/train_net.py end to end ---------------------------------------------------


@pytest.fixture(scope="module")
def datasets_root(
    tmp_path_factory: pytest.TempPathFactory, write_proposal_file: Callable[..., Path]
) -> Path:
    root = tmp_path_factory.mktemp("ohem_datasets")
    # A complete split of the current generator version is reused whatever its size, so the
    # script's shapes_val is these eight images.
    folder = ensure_shapes(root, "val", num_images=8)
    write_proposal_file(folder / "annotations.json", root / "proposals.pkl")
    return root


def train_net(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETKIT_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(PROJECT / "train_net.py"), "--config-file", str(SHAPES_OHEM), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_net_trains_and_evaluates(datasets_root: Path, tmp_path: Path) -> None:
    output = tmp_path / "output"
    proposals = datasets_root / "proposals.pkl"
    result = train_net(
        datasets_root,
        *TINY,
        "DATASETS.TRAIN=[shapes_val]",
        "DATASETS.TEST=[shapes_val]",
        f"DATASETS.PROPOSAL_FILES_TRAIN=[{proposals}]",
        f"DATASETS.PROPOSAL_FILES_TEST=[{proposals}]",
        "DATASETS.PROPOSAL_LOADER=auto",
        "INPUT.MIN_SIZE_TRAIN=[96, 112]",
        "INPUT.MAX_SIZE_TRAIN=160",
        "INPUT.MIN_SIZE_TEST=96",
        "INPUT.MAX_SIZE_TEST=160",
        "DATALOADER.NUM_WORKERS=0",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=16",
        "SOLVER.MAX_ITER=4",
        "SOLVER.WARMUP_ITERS=2",
        "SOLVER.STEPS=[3]",
        "SOLVER.LOG_PERIOD=1",
        f"OUTPUT_DIR={output}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    cfg = ohem_config(path=output / "config.yaml")  # the resolved config loads back
    assert cfg.MODEL.ROI_HEADS.SAMPLER == "OHEMSampler" and cfg.MODEL.OHEM.NMS_THRESH == 0.7
    lines = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2, 3, 4]
    for line in lines[:4]:
        assert all(math.isfinite(line[key]) for key in ("total_loss", "loss_cls", "loss_box_reg"))
    evaluation = json.loads((output / "inference/shapes_val/evaluation.json").read_text())
    assert {"AP", "AP50", "AP75"} <= set(evaluation["bbox"])
    assert "shapes_val/bbox/AP" in lines[4]


def test_train_net_refuses_ignored_bands_in_one_line(datasets_root: Path, tmp_path: Path) -> None:
    result = train_net(
        datasets_root,
        "MODEL.ROI_HEADS.IOU_THRESHOLDS=[0.1, 0.5]",
        "MODEL.ROI_HEADS.IOU_LABELS=[-1, 0, 1]",
        f"OUTPUT_DIR={tmp_path / 'refused'}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "train_net: MODEL.ROI_HEADS.IOU_THRESHOLDS [0.1, 0.5]" in result.stderr
    assert "Traceback" not in result.stderr and "Starting training" not in result.stdout
    assert not (tmp_path / "refused").exists()  # refused by check_config, before any set-up


def test_the_readme_lists_the_keys_as_generated_from_their_defaults() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert generated_part(readme, "README.md") == markdown_reference(OHEMKeys), (
        "regenerate the table with the command in README.md's marker line"
    )
