"""The RPN's up-front config checks, run by ``check_config`` (so by ``train_net.py``) before any
work: every problem of a ``ProposalNetwork`` config's ``MODEL.RPN`` and
``MODEL.ANCHOR_GENERATOR`` keys at once, each by the rule of the constructor that would refuse it
later."""

from __future__ import annotations

from detkit.config import register_config_check
from detkit.modeling.matcher import band_problems
from detkit.modeling.sampling import sampler_problems

from .proposal_generator import SELECTION_KEYS, anchor_problems, selection_problems


@register_config_check
def rpn_config_problems(cfg) -> list[str]:
    """What a config that picks ``ProposalNetwork`` sets that the RPN cannot be built with
    (nothing for other meta-architectures)."""
    if cfg.MODEL.META_ARCHITECTURE != "ProposalNetwork":
        return []
    if "RPN" not in cfg.MODEL or "ANCHOR_GENERATOR" not in cfg.MODEL:
        return [
            "ProposalNetwork: the config has no MODEL.RPN keys; load it over "
            "rpn.add_rpn_config(get_default_config()), as projects/RPN/train_net.py does"
        ]
    spec, anchors = cfg.MODEL.RPN, cfg.MODEL.ANCHOR_GENERATOR
    problems = []
    if not spec.IN_FEATURES:
        problems.append("MODEL.RPN.IN_FEATURES must name at least one backbone map")
    problems += band_problems(
        spec.IOU_THRESHOLDS, spec.IOU_LABELS, ("MODEL.RPN.IOU_THRESHOLDS", "MODEL.RPN.IOU_LABELS")
    )
    problems += sampler_problems(
        spec.BATCH_SIZE_PER_IMAGE,
        spec.POSITIVE_FRACTION,
        ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.POSITIVE_FRACTION"),
    )
    problems += anchor_problems(anchors.SIZES, anchors.ASPECT_RATIOS, max(len(spec.IN_FEATURES), 1))
    problems += selection_problems(
        spec.PRE_NMS_TOPK_TEST, spec.POST_NMS_TOPK_TEST, spec.NMS_THRESH, SELECTION_KEYS
    )
    return problems
