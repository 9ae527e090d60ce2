"""The evaluation package's up-front checks, run by :func:`detkit.config.check_config`
(registered when :mod:`detkit.evaluation` is imported): every evaluator that
``TEST.EVALUATORS`` names is registered, and the COCO backend chosen can run here."""

from __future__ import annotations

from omegaconf import DictConfig

from ..config import register_config_check
from ..config.checks import unknown_name_problems
from .build import EVALUATOR_REGISTRY
from .coco_evaluation import coco_eval_backend_problem


@register_config_check
def _evaluator_problems(cfg: DictConfig) -> list[str]:
    problems = unknown_name_problems("TEST.EVALUATORS", cfg.TEST.EVALUATORS, EVALUATOR_REGISTRY)
    backend = coco_eval_backend_problem(cfg.TEST.COCO_EVAL_BACKEND)
    return [*problems, backend] if backend else problems
