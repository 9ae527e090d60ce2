"""Typed defaults of every detkit config key, each with its meaning.

Keys follow detectron2's names where the concept is the same. Values that reproduce the Fast
R-CNN paper are set here or in ``configs/Base-FastRCNN.yaml``. Every key is declared with
:func:`key`, which keeps its meaning next to its default: ``docs/configs.md``'s table of keys is
generated from these (``python -m detkit.config.reference --write docs/configs.md``), so the two
cannot drift apart. Projects add keys with :func:`detkit.config.add_config`, never by editing
this file; their dataclasses may use :func:`key` too, for a table of their own.
"""

# ruff: noqa: RUF001  (the meanings are Markdown, with multiplication signs and dashes)

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

DOC = "doc"  # the field-metadata entry that holds a key's meaning


def key(default: Any, doc: str) -> Any:
    """A config key with its ``default`` and its meaning ``doc`` (Markdown, one line in the
    table of keys). A list or dict default is copied for every config built."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={DOC: doc})
    return field(default=default, metadata={DOC: doc})


def section(cls: type) -> Any:
    """A nested section of keys, the dataclass ``cls``."""
    return field(default_factory=cls)


@dataclass
class BackboneConfig:
    NAME: str = key(
        "VGG16",
        "backbone, by name in `BACKBONE_REGISTRY`: `VGG16`, `ResNet` (C4: res4, stride 16), "
        "`ResNetFPN`, `SmallConvNet`, or a project's",
    )
    FREEZE_AT: int = key(
        2,
        "stages kept frozen from the input (VGG16: conv blocks, 2 = conv1–conv2, as in the "
        "paper, up to 5; ResNet: 1 = the stem, 2 = the stem and res2, … up to every stage "
        "built); read by `VGG16`, `ResNet` and `ResNetFPN` (its trunk; the FPN layers always "
        "train), not by `SmallConvNet`, which trains every layer",
    )


@dataclass
class ResNetsConfig:
    DEPTH: int = key(
        50,
        "ResNet depth: 18, 34, 50 or 101 (`ResNet` and `ResNetFPN`'s trunk; torchvision's "
        "blocks and names, so its ImageNet weights load by name)",
    )


@dataclass
class FPNConfig:
    IN_FEATURES: list[str] = key(
        ["res2", "res3", "res4", "res5"],
        "`ResNetFPN`: the trunk stages (strides 4, 8, 16, 32) the pyramid is built on, each "
        "stride twice the previous; each gives a level `p<log2 stride>` (`p2` … `p5`; no `p6`, "
        "which only an RPN would use). The trunk is built through the last one. The model pads "
        "every batch to a multiple of the largest stride (the backbone's `size_divisibility`, "
        "32 here) so the levels line up",
    )
    OUT_CHANNELS: int = key(
        256,
        "`ResNetFPN`: channels of every level (the lateral 1×1 and output 3×3 convolutions)",
    )


@dataclass
class SmallConvNetConfig:
    CHANNELS: list[int] = key(
        [16, 32, 64], "`SmallConvNet`: width of each stage, after a stride-2 stem"
    )
    CONVS_PER_STAGE: int = key(
        2, "`SmallConvNet`: 3×3 conv + BatchNorm + ReLU layers per stage (at least 1)"
    )
    STRIDE: int = key(
        8,
        "`SmallConvNet`: feature stride, a power of 2 from 2 up to 2^(number of stages); 2×2 "
        "max pools between the first stages reach it, later stages keep that resolution",
    )


@dataclass
class ROIHeadsConfig:
    NAME: str = key(
        "StandardROIHeads", "RoI heads, by name in `ROI_HEADS_REGISTRY`: `StandardROIHeads`"
    )
    IN_FEATURES: list[str] = key(
        [],
        "the backbone maps RoIs are pooled from, finest first (e.g. `[p2, p3, p4, p5]`); "
        "empty: every map the backbone returns, ordered by stride. Several maps need the same "
        "channels and strides `2**k` for consecutive `k`; each RoI is then pooled from one "
        "level (see `POOLER_CANONICAL_*`). A name the backbone does not produce is an error "
        "naming those it does",
    )
    NUM_CLASSES: int = key(
        0,
        "object classes K (background excluded); 0: as many as `CLASS_NAMES`, which are then "
        "taken from the first `DATASETS.TRAIN` dataset when empty",
    )
    CLASS_NAMES: list[str] = key(
        [],
        "the names of the K classes, in order; when empty, filled from the first "
        "`DATASETS.TRAIN` dataset's classes by the set-up step after loading "
        "(`detkit.data.setup_datasets`, which every tool runs; a COCO file's categories are "
        "read without its annotations), so a run's `config.yaml` carries them to the demo and "
        "the predictor",
    )
    BATCH_SIZE_PER_IMAGE: int = key(
        64, "RoIs sampled per image (R/N: 128 / 2), read by `FastRCNNSampler`"
    )
    POSITIVE_FRACTION: float = key(
        0.25,
        "largest fraction of the sampled RoIs that are foreground; when an image has fewer "
        "foreground RoIs, background fills the batch (`FastRCNNSampler`)",
    )
    IOU_THRESHOLDS: list[float] = key(
        [0.1, 0.5],
        "the Matcher's IoU thresholds (detectron2's name), rising within [0, 1]: they split "
        "[0, 1] into bands, each including its lower threshold, and a proposal falls in the "
        "band of its highest IoU with any ground-truth box. The paper's `[0.1, 0.5]`: below "
        "0.1, [0.1, 0.5), from 0.5; `[0.5]` with `IOU_LABELS: [0, 1]` is detectron2's (every "
        "IoU below 0.5 background)",
    )
    IOU_LABELS: list[int] = key(
        [-1, 0, 1],
        "the label of each band of `IOU_THRESHOLDS`, lowest first, one more than the "
        "thresholds: -1 ignored (never sampled), 0 background, 1 foreground",
    )
    BG_IOU_LO: float | None = key(
        None,
        "deprecated: when set, read as `IOU_THRESHOLDS: [BG_IOU_LO, fg]` (fg: the last of "
        "`IOU_THRESHOLDS`) and `IOU_LABELS: [-1, 0, 1]`, with a warning; write those two "
        "keys instead",
    )
    SAMPLER: str = key(
        "FastRCNNSampler",
        "RoI sampler, by name in `SAMPLER_REGISTRY`: `FastRCNNSampler` (the paper's: "
        "`BATCH_SIZE_PER_IMAGE` RoIs drawn at random per image, at most `POSITIVE_FRACTION` "
        "of them foreground) or a project's",
    )
    PROPOSAL_APPEND_GT: bool = key(True, "add the ground-truth boxes to the proposals in training")
    DEDUP_PROPOSALS: bool = key(
        True,
        "per image, drop proposals whose box coincides with an earlier one's (objectness "
        "order) on the grid of the map it is pooled from: `box × 1/stride`, rounded as RoI "
        "pooling rounds; the paper's 1/16 for VGG16, generalised to any stride and, with "
        "several maps, to each box's level. Applied before matching in training (ground-truth "
        "boxes, added afterwards, always stay) and before scoring at test time "
        "([datasets.md](datasets.md#proposal-files))",
    )
    SCORE_THRESH_TEST: float = key(
        0.05, "a detection is kept only if its class score is above this"
    )
    NMS_THRESH_TEST: float = key(
        0.3,
        "per-class NMS IoU at test time (the paper's VOC setting; detectron2 uses 0.5)",
    )


@dataclass
class ROIBoxHeadConfig:
    NAME: str = key(
        "FastRCNNFCHead",
        "box head, by name in `ROI_BOX_HEAD_REGISTRY`: `FastRCNNFCHead` (fc6, fc7) or a project's",
    )
    POOLER_TYPE: str = key(
        "ROIPool",
        "RoI feature extractor, from `ROI_POOLER_REGISTRY`: `ROIPool` (the paper's RoI max "
        "pooling, `detkit.layers.ROIPool`), `ROIAlign` (`detkit.layers.ROIAlign`, "
        "`aligned=False`) or `ROIAlignV2` (`aligned=True`: the half-pixel offset, detectron2's "
        "choice for FPN models); an unknown name is an error listing the registered ones "
        "([extending.md](extending.md#a-pooler-type))",
    )
    POOLER_RESOLUTION: int = key(7, "pooled grid size (h = w)")
    POOLER_SAMPLING_RATIO: int = key(
        0,
        "RoIAlign's bilinear samples per bin side (`0` or less: adaptive, "
        "`ceil(RoI size / bins)`); `ROIPool` ignores it",
    )
    POOLER_CANONICAL_BOX_SIZE: int = key(
        224,
        "with several maps: a box of `sqrt(area)` equal to this many pixels goes to level "
        "`POOLER_CANONICAL_LEVEL`; each halving or doubling moves it one level down or up: "
        "`floor(level + log2(sqrt(area) / size))`, clamped to the maps given (FPN's rule, as "
        "detectron2's `assign_boxes_to_levels`)",
    )
    POOLER_CANONICAL_LEVEL: int = key(
        4, "that level; level `k` is the map of stride `2**k` (P4, stride 16)"
    )
    BBOX_REG_WEIGHTS: list[float] = key(
        [10.0, 10.0, 5.0, 5.0],
        "box-delta weights, the inverse of the paper's target stds (0.1, 0.1, 0.2, 0.2)",
    )
    NUM_FC: int = key(2, "`FastRCNNFCHead`: fully connected layers (fc6, fc7)")
    FC_DIM: int = key(4096, "`FastRCNNFCHead`: width of each fully connected layer")
    SVD_RANKS: list[int] = key(
        [],
        "`FastRCNNFCHead`: a rank per fully connected layer (fc6, fc7, …) to build it as a "
        "truncated SVD, 0 to keep it whole (the paper's `[1024, 256]`): a factored layer is two, "
        "`in → rank` without bias and `rank → out` with the bias, to load a checkpoint written "
        "by `tools/compress_fc.py`; empty: none. A checkpoint of the other layout is refused",
    )
    DROPOUT: float = key(
        0.5,
        "`FastRCNNFCHead`: dropout after each fully connected layer, in [0, 1) (0 disables)",
    )
    SMOOTH_L1_BETA: float = key(
        1.0, "smooth-L1 transition point of the box loss (the paper's loss has 1)"
    )
    LOSS_WEIGHT: float = key(1.0, "λ, the weight of the box loss")


@dataclass
class ModelConfig:
    META_ARCHITECTURE: str = key(
        "FastRCNN",
        "meta-architecture, by name in `META_ARCH_REGISTRY`: `FastRCNN`, or a project's "
        "(`ProposalNetwork` of projects/RPN)",
    )
    DEVICE: str = key(
        "auto",
        "device the model runs on: `auto` (`cuda` when a CUDA device is available, else `cpu`, "
        "said in the log), `cpu` (warned about when a GPU is present) or `cuda` (with several "
        "processes write `cuda`, not `cuda:0`: process i uses GPU i, through NCCL; gloo "
        "otherwise)",
    )
    WEIGHTS: str = key(
        "",
        "a detkit checkpoint or a torchvision ImageNet state_dict (mapped by name), loaded by "
        "`DetectionCheckpointer`: by the trainer at start (model weights only; not when "
        "`--resume` finds a checkpoint; nothing when empty), by `--eval-only`, and by "
        "`DefaultPredictor` (which requires it)",
    )
    INPUT_FORMAT: str = key(
        "BGR",
        "channel order the model expects, `BGR` or `RGB`: the mapper and `DefaultPredictor` "
        "turn the images OpenCV reads (BGR) into it",
    )
    PIXEL_MEAN: list[float] = key(
        [102.9801, 115.9465, 122.7717],
        "per-channel mean subtracted from the image, in `INPUT_FORMAT` order (the paper's, BGR)",
    )
    PIXEL_STD: list[float] = key(
        [1.0, 1.0, 1.0],
        "per-channel divisor, after the mean, in `INPUT_FORMAT` order; each entry positive",
    )
    CHANNELS_LAST: bool = key(
        False,
        "run the backbone on images in channels-last memory order (same results up to "
        "rounding; faster convolutions on CPUs with oneDNN and on GPUs under AMP)",
    )
    BACKBONE: BackboneConfig = section(BackboneConfig)
    RESNETS: ResNetsConfig = section(ResNetsConfig)
    FPN: FPNConfig = section(FPNConfig)
    SMALL_CONVNET: SmallConvNetConfig = section(SmallConvNetConfig)
    ROI_HEADS: ROIHeadsConfig = section(ROIHeadsConfig)
    ROI_BOX_HEAD: ROIBoxHeadConfig = section(ROIBoxHeadConfig)


@dataclass
class DatasetsConfig:
    REGISTER: list[dict[str, Any]] = key(
        [],
        "datasets to register from the config before use, each `{NAME, FORMAT: coco, "
        "JSON_FILE, IMAGE_ROOT}` or `{NAME, FORMAT: pascal_voc, DIRNAME, SPLIT, YEAR, "
        "CLASS_NAMES}` (paths relative to the working directory; see docs/datasets.md)",
    )
    TRAIN: list[str] = key([], "registered dataset names to train on, together")
    TEST: list[str] = key([], "registered dataset names to evaluate on, each on its own")
    PROPOSAL_FILES_TRAIN: list[str] = key(
        [],
        "one proposal file per `DATASETS.TRAIN` dataset, in the same order (empty: no proposals)",
    )
    PROPOSAL_FILES_TEST: list[str] = key(
        [], "one proposal file per `DATASETS.TEST` dataset, in the same order"
    )
    PROPOSAL_LOADER: str = key(
        "auto",
        "how proposal files are read: `auto` (pickle, or `.mat` by extension), or by name in "
        "`PROPOSAL_LOADER_REGISTRY`: `detectron2_pickle`, `fast_rcnn_mat`, `selective_search` "
        "(computed on first use into the named file) or a project's",
    )
    PRECOMPUTED_PROPOSAL_TOPK_TRAIN: int = key(
        2000, "proposals kept per training image, by objectness"
    )
    PRECOMPUTED_PROPOSAL_TOPK_TEST: int = key(2000, "proposals kept per test image, by objectness")


@dataclass
class InputConfig:
    MIN_SIZE_TRAIN: list[int] = key(
        [600],
        "`ResizeShortestEdge` in training: shortest-edge sizes drawn from (several = multi-scale)",
    )
    MAX_SIZE_TRAIN: int = key(1000, "`ResizeShortestEdge` in training: cap on the longest edge")
    MIN_SIZE_TEST: int = key(
        600, "shortest edge at test time (`ResizeShortestEdge` in `TRANSFORMS_TEST`)"
    )
    MAX_SIZE_TEST: int = key(
        1000, "cap on the longest edge at test time (`ResizeShortestEdge` in `TRANSFORMS_TEST`)"
    )
    TRANSFORMS_TRAIN: list[str] = key(
        ["ResizeShortestEdge", "RandomFlip"],
        "image transforms in training, by name in `TRANSFORM_REGISTRY`, applied in order by "
        "the `DatasetMapper` (boxes and proposals move with the image): `ResizeShortestEdge` "
        "(`MIN_SIZE_TRAIN`, `MAX_SIZE_TRAIN`), `RandomFlip` (horizontal, probability 0.5) or a "
        "project's",
    )
    TRANSFORMS_TEST: list[str] = key(
        ["ResizeShortestEdge"],
        "the same for the test loader (`ResizeShortestEdge` then uses `MIN_SIZE_TEST`, "
        "`MAX_SIZE_TEST`; `RandomFlip` never flips); `DefaultPredictor` applies them too",
    )
    MAX_IMAGE_PIXELS: int = key(
        89_478_485,
        "the largest image read (width × height, taken from the file's header before anything "
        "is decoded) by training, evaluation, `tools/compute_proposals.py`, the demo and the "
        "visualisers; a larger one is a bad image (`DATALOADER.BAD_IMAGE_POLICY`), and so is a "
        "file of more than 8 bytes per pixel of this plus 16 MiB. The default is Pillow's "
        "decompression-bomb bound (about 0.25 GiB decoded); readers without a config use it. "
        "0 = no limit (OpenCV still refuses more than 2^30 pixels)",
    )


@dataclass
class DataLoaderConfig:
    NUM_WORKERS: int = key(2, "data-loading worker processes (0: the main process loads)")
    FILTER_EMPTY_ANNOTATIONS: bool = key(
        True,
        "leave out of training the images without an object to learn from (none left after "
        "removing crowd and `difficult` ones); the count is logged",
    )
    BAD_IMAGE_POLICY: str = key(
        "stop",
        "what training does with an image it cannot use (missing, unreadable, truncated, not "
        "the size its dataset gives): `stop` the run naming the file, or `skip` it (logged; "
        "another image of the same orientation takes its place); evaluation always stops",
    )
    MAX_BAD_IMAGES: int = key(
        10,
        "with `BAD_IMAGE_POLICY: skip`, the run stops once a loader process has met more than "
        "this many distinct bad images, listing them",
    )


@dataclass
class ClipGradientsConfig:
    ENABLED: bool = key(False, "clip gradients after the backward pass (after unscaling under AMP)")
    CLIP_TYPE: str = key(
        "norm",
        "`norm`: scale all trainable parameters' gradients together so their norm is at most "
        "`CLIP_VALUE`; `value`: clamp each element to `[-CLIP_VALUE, CLIP_VALUE]`",
    )
    CLIP_VALUE: float = key(10.0, "the largest norm or absolute value")
    NORM_TYPE: float = key(2.0, "p of the p-norm for `CLIP_TYPE: norm`")


@dataclass
class AMPConfig:
    ENABLED: bool = key(
        False,
        "automatic mixed precision: float16 with a gradient scaler on CUDA, bfloat16 on the CPU",
    )


@dataclass
class SolverConfig:
    IMS_PER_BATCH: int = key(
        2,
        "images per mini-batch (N), all processes together; must divide by the number of processes",
    )
    BASE_LR: float = key(0.001, "learning rate")
    MOMENTUM: float = key(0.9, "SGD momentum")
    WEIGHT_DECAY: float = key(
        0.0005, "weight decay of weights: every parameter but biases and norm layers' weights"
    )
    BIAS_LR_FACTOR: float = key(
        2.0, "learning-rate multiplier for biases (of every layer, norm layers' included)"
    )
    WEIGHT_DECAY_BIAS: float = key(
        0.0, "weight decay of biases (of every layer, norm layers' included)"
    )
    WEIGHT_DECAY_NORM: float = key(
        0.0,
        "weight decay of normalisation layers' weights (BatchNorm, GroupNorm, LayerNorm); "
        "their biases are biases (`BIAS_LR_FACTOR`, `WEIGHT_DECAY_BIAS`)",
    )
    MAX_ITER: int = key(40000, "training iterations (VOC07: 30k at 0.001, then 10k at 0.0001)")
    STEPS: list[int] = key(
        [30000],
        "iterations at which the learning rate is multiplied by `GAMMA`; they must increase and "
        "be positive; steps at or past `MAX_ITER` are ignored, with a warning",
    )
    GAMMA: float = key(0.1, "learning-rate step factor")
    WARMUP_ITERS: int = key(
        0,
        "iterations of linear warm-up (0: none); one over half of `MAX_ITER` is cut to a tenth "
        "of it, with a warning",
    )
    WARMUP_FACTOR: float = key(
        0.001,
        "the first iteration's lr is this fraction of the lr warm-up leads to; it rises "
        "linearly over `WARMUP_ITERS`",
    )
    CLIP_GRADIENTS: ClipGradientsConfig = section(ClipGradientsConfig)
    AMP: AMPConfig = section(AMPConfig)
    CHECKPOINT_PERIOD: int = key(
        5000, "iterations between checkpoints (`model_final.pth` is written at the end)"
    )
    LOG_PERIOD: int = key(
        20,
        "iterations between writes of the console line, `metrics.json` and TensorBoard; one "
        "over a tenth of `MAX_ITER` (and over 20) is cut to that, with a warning",
    )
    MAX_NONFINITE_STEPS: int = key(
        0,
        "steps whose loss is infinite or NaN that are skipped, weights unchanged and each "
        "logged, before training stops at the next one (counted over the whole run); 0: stop "
        "at the first",
    )


@dataclass
class EvaluationConfig:
    EVAL_PERIOD: int = key(
        0,
        "iterations between evaluations on `DATASETS.TEST` (0: only at the end; a finished "
        "training run always ends with one)",
    )
    VAL_LOSS_PERIOD: int = key(
        0,
        "iterations between validation losses (the training losses, without gradients, on "
        "the first `DATASETS.TEST` set with its ground truth), logged as `validation/*`; 0: off",
    )
    EVALUATORS: list[str] = key(
        [],
        "evaluators run on each test set, by name in `EVALUATOR_REGISTRY`: `coco`, "
        "`pascal_voc` (both: the VOC results are named `bbox_voc`) or a project's; empty: the "
        "dataset's `evaluator_type` metadata",
    )
    COCO_EVAL_BACKEND: str = key(
        "pycocotools",
        "what computes the `coco` evaluator's AP: `pycocotools` (the default: the official COCO "
        "code, whose figures papers report) or `faster_coco_eval` (package `faster-coco-eval`: "
        "the same rules in C++, the same AP to 1e-6, 3.4x faster at COCO val's size, 14 s "
        "instead of 47 s, [benchmarks](benchmarks.md#evaluation-at-coco-val-scale)); a backend "
        "not installed is refused before the run starts",
    )
    DETECTIONS_PER_IMAGE: int = key(100, "detections kept per image, the best scoring")
    MIN_SIZES: list[int] = key(
        [],
        "the test image pyramid (paper §2.4, e.g. `[480, 576, 688, 864, 1200]` with "
        "`INPUT.MAX_SIZE_TEST: 2000`): the backbone runs at each shortest-edge size (longest "
        "capped at `INPUT.MAX_SIZE_TEST`) and each RoI is pooled from the scale where its area is "
        "closest to 224², boxes decoded in the original image; empty: one scale, "
        "`INPUT.MIN_SIZE_TEST` (the transforms of `INPUT.TRANSFORMS_TEST`)",
    )


@dataclass
class DetkitConfig:
    MODEL: ModelConfig = section(ModelConfig)
    DATASETS: DatasetsConfig = section(DatasetsConfig)
    INPUT: InputConfig = section(InputConfig)
    DATALOADER: DataLoaderConfig = section(DataLoaderConfig)
    SOLVER: SolverConfig = section(SolverConfig)
    TEST: EvaluationConfig = section(EvaluationConfig)
    OUTPUT_DIR: str = key(
        "./output",
        "where checkpoints, logs and results go "
        "([the files](getting_started.md#what-a-run-writes))",
    )
    SEED: int = key(
        -1,
        "random seed (negative: drawn at start and recorded in `config.yaml` and checkpoints; "
        "`--resume` reuses the checkpoint's)",
    )
