"""The RPN project: a region proposal network that trains on any detkit dataset and writes
proposal files Fast R-CNN reads. Importing it registers ``ProposalNetwork``
(``META_ARCH_REGISTRY``), ``ResNetFPNP6`` (``BACKBONE_REGISTRY``) and ``proposal_recall``
(``EVALUATOR_REGISTRY``)."""

from . import config_checks  # noqa: F401  (registers the RPN's config checks)
from .backbone import ResNetFPNP6
from .config import RPNKeys, add_rpn_config
from .evaluator import ProposalRecallEvaluator, proposal_file_recall
from .proposal_file import ProposalFileWriter
from .proposal_generator import RPN, build_anchor_generator
from .proposal_network import ProposalNetwork

__all__ = [
    "RPN",
    "ProposalFileWriter",
    "ProposalNetwork",
    "ProposalRecallEvaluator",
    "RPNKeys",
    "ResNetFPNP6",
    "add_rpn_config",
    "build_anchor_generator",
    "proposal_file_recall",
]
