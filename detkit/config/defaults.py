"""Typed defaults of every detkit config key.

Keys follow detectron2's names where the concept is the same. Values that reproduce the Fast
R-CNN paper are set here or in ``configs/Base-FastRCNN.yaml``; ``docs/configs.md`` explains each
key. Projects add keys with :func:`detkit.config.add_config`, never by editing this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackboneConfig:
    NAME: str = "VGG16"
    FREEZE_AT: int = 2


@dataclass
class ResNetsConfig:
    DEPTH: int = 50


@dataclass
class FPNConfig:
    IN_FEATURES: list[str] = field(default_factory=lambda: ["res2", "res3", "res4", "res5"])
    OUT_CHANNELS: int = 256


@dataclass
class SmallConvNetConfig:
    CHANNELS: list[int] = field(default_factory=lambda: [16, 32, 64])
    CONVS_PER_STAGE: int = 2
    STRIDE: int = 8


@dataclass
class ROIHeadsConfig:
    NAME: str = "StandardROIHeads"
    IN_FEATURES: list[str] = field(default_factory=lambda: [])
    NUM_CLASSES: int = 80
    BATCH_SIZE_PER_IMAGE: int = 64
    POSITIVE_FRACTION: float = 0.25
    IOU_THRESHOLDS: list[float] = field(default_factory=lambda: [0.1, 0.5])
    IOU_LABELS: list[int] = field(default_factory=lambda: [-1, 0, 1])
    BG_IOU_LO: float | None = None  # deprecated: read into IOU_THRESHOLDS / IOU_LABELS
    SAMPLER: str = "FastRCNNSampler"
    PROPOSAL_APPEND_GT: bool = True
    DEDUP_PROPOSALS: bool = True
    SCORE_THRESH_TEST: float = 0.05
    NMS_THRESH_TEST: float = 0.3


@dataclass
class ROIBoxHeadConfig:
    NAME: str = "FastRCNNFCHead"
    POOLER_TYPE: str = "ROIPool"
    POOLER_RESOLUTION: int = 7
    POOLER_SAMPLING_RATIO: int = 0
    POOLER_CANONICAL_BOX_SIZE: int = 224
    POOLER_CANONICAL_LEVEL: int = 4
    BBOX_REG_WEIGHTS: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    NUM_FC: int = 2
    FC_DIM: int = 4096
    DROPOUT: float = 0.5
    SMOOTH_L1_BETA: float = 1.0
    LOSS_WEIGHT: float = 1.0


@dataclass
class ModelConfig:
    META_ARCHITECTURE: str = "FastRCNN"
    DEVICE: str = "cpu"
    WEIGHTS: str = ""
    INPUT_FORMAT: str = "BGR"
    PIXEL_MEAN: list[float] = field(default_factory=lambda: [102.9801, 115.9465, 122.7717])
    PIXEL_STD: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    CHANNELS_LAST: bool = False
    BACKBONE: BackboneConfig = field(default_factory=BackboneConfig)
    RESNETS: ResNetsConfig = field(default_factory=ResNetsConfig)
    FPN: FPNConfig = field(default_factory=FPNConfig)
    SMALL_CONVNET: SmallConvNetConfig = field(default_factory=SmallConvNetConfig)
    ROI_HEADS: ROIHeadsConfig = field(default_factory=ROIHeadsConfig)
    ROI_BOX_HEAD: ROIBoxHeadConfig = field(default_factory=ROIBoxHeadConfig)


@dataclass
class DatasetsConfig:
    TRAIN: list[str] = field(default_factory=lambda: [])
    TEST: list[str] = field(default_factory=lambda: [])
    PROPOSAL_FILES_TRAIN: list[str] = field(default_factory=lambda: [])
    PROPOSAL_FILES_TEST: list[str] = field(default_factory=lambda: [])
    PROPOSAL_LOADER: str = "auto"
    PRECOMPUTED_PROPOSAL_TOPK_TRAIN: int = 2000
    PRECOMPUTED_PROPOSAL_TOPK_TEST: int = 2000


@dataclass
class InputConfig:
    MIN_SIZE_TRAIN: list[int] = field(default_factory=lambda: [600])
    MAX_SIZE_TRAIN: int = 1000
    MIN_SIZE_TEST: int = 600
    MAX_SIZE_TEST: int = 1000
    TRANSFORMS_TRAIN: list[str] = field(
        default_factory=lambda: ["ResizeShortestEdge", "RandomFlip"]
    )
    TRANSFORMS_TEST: list[str] = field(default_factory=lambda: ["ResizeShortestEdge"])


@dataclass
class DataLoaderConfig:
    NUM_WORKERS: int = 2
    FILTER_EMPTY_ANNOTATIONS: bool = True


@dataclass
class ClipGradientsConfig:
    ENABLED: bool = False
    CLIP_TYPE: str = "norm"
    CLIP_VALUE: float = 10.0
    NORM_TYPE: float = 2.0


@dataclass
class AMPConfig:
    ENABLED: bool = False


@dataclass
class SolverConfig:
    IMS_PER_BATCH: int = 2
    BASE_LR: float = 0.001
    MOMENTUM: float = 0.9
    WEIGHT_DECAY: float = 0.0005
    BIAS_LR_FACTOR: float = 2.0
    WEIGHT_DECAY_BIAS: float = 0.0
    WEIGHT_DECAY_NORM: float = 0.0
    MAX_ITER: int = 40000
    STEPS: list[int] = field(default_factory=lambda: [30000])
    GAMMA: float = 0.1
    WARMUP_ITERS: int = 0
    WARMUP_FACTOR: float = 0.001
    CLIP_GRADIENTS: ClipGradientsConfig = field(default_factory=ClipGradientsConfig)
    AMP: AMPConfig = field(default_factory=AMPConfig)
    CHECKPOINT_PERIOD: int = 5000
    LOG_PERIOD: int = 20


@dataclass
class EvaluationConfig:
    EVAL_PERIOD: int = 0
    EVALUATORS: list[str] = field(default_factory=lambda: [])
    DETECTIONS_PER_IMAGE: int = 100


@dataclass
class DetkitConfig:
    MODEL: ModelConfig = field(default_factory=ModelConfig)
    DATASETS: DatasetsConfig = field(default_factory=DatasetsConfig)
    INPUT: InputConfig = field(default_factory=InputConfig)
    DATALOADER: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    SOLVER: SolverConfig = field(default_factory=SolverConfig)
    TEST: EvaluationConfig = field(default_factory=EvaluationConfig)
    OUTPUT_DIR: str = "./output"
    SEED: int = -1
