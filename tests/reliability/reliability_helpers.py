"""Helpers of the reliability suite's cases: tiny training runs and tool subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"
SHAPES_CONFIG = REPO / "configs" / "shapes" / "fast_rcnn.yaml"


@dataclass(frozen=True)
class TinyRun:
    """A datasets root holding ``shapes_val`` (what ``DETKIT_DATASETS`` points at) and its
    proposal file, for training processes that take a few seconds."""

    root: Path
    proposals: Path

    def overrides(self, output: Path, max_iter: int = 4, **extra: object) -> list[str]:
        """``KEY=VALUE`` overrides of the shapes config: a tiny model trained for ``max_iter``
        iterations on shapes_val into ``output``; ``extra`` adds or replaces keys (dots
        written as ``__``, e.g. ``SOLVER__CHECKPOINT_PERIOD=2``)."""
        keys: dict[str, object] = {
            "DATASETS.TRAIN": "[shapes_val]",
            "DATASETS.TEST": "[shapes_val]",
            "DATASETS.PROPOSAL_FILES_TRAIN": f"[{self.proposals}]",
            "DATASETS.PROPOSAL_FILES_TEST": f"[{self.proposals}]",
            "DATASETS.PROPOSAL_LOADER": "auto",
            "MODEL.SMALL_CONVNET.CHANNELS": "[8, 16]",
            "MODEL.ROI_BOX_HEAD.FC_DIM": 32,
            "INPUT.MIN_SIZE_TRAIN": "[96]",
            "INPUT.MAX_SIZE_TRAIN": 160,
            "INPUT.MIN_SIZE_TEST": 96,
            "INPUT.MAX_SIZE_TEST": 160,
            "DATALOADER.NUM_WORKERS": 0,
            "SOLVER.MAX_ITER": max_iter,
            "SOLVER.STEPS": "[]",
            "SOLVER.WARMUP_ITERS": 0,
            "SOLVER.CHECKPOINT_PERIOD": max(max_iter // 2, 1),
            "SOLVER.LOG_PERIOD": 1,
            "TEST.EVALUATORS": "[coco]",
            "OUTPUT_DIR": str(output),
        }
        keys.update({key.replace("__", "."): value for key, value in extra.items()})
        return [f"{key}={value}" for key, value in keys.items()]


def tool_env(root: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a tool subprocess: one thread, ``DETKIT_DATASETS`` at ``root``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    if root is not None:
        env["DETKIT_DATASETS"] = str(root)
    return env


def run_tool(
    script: str | Path, *args: str, root: Path | None = None, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess:
    """Runs ``tools/<script>`` (or a path) to completion; stdout and stderr as text."""
    path = Path(script) if Path(script).is_absolute() else REPO / "tools" / script
    return subprocess.run(
        [sys.executable, str(path), *map(str, args)],
        cwd=REPO,
        env=tool_env(root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
