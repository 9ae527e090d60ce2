"""Two CPU processes under gloo through ``detkit.engine.launch``: both ranks end with the same
weights, only rank 0 writes (rank 1 only its own log), and a rank that fails makes ``launch``
raise its error instead of leaving the other rank waiting.

Spawning two processes costs seconds (each imports torch and detkit), so one launch serves both:
the ranks train, save what they hold, then rank 1 fails while rank 0 waits at a barrier. The
function the processes run lives at module level so that spawn can import it by name (pytest
puts this folder on ``sys.path``, which the children inherit).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import pytest
import torch

from detkit.engine import launch

REPO = Path(__file__).resolve().parents[2]
CHILD_DATASET = "engine_tiny_shapes_dist"


def train_then_fail_on_rank_one(
    folder: str, proposal_file: str, overrides: list[str], result_dir: str
) -> None:
    """One rank of a DefaultTrainer run, set up as tools/train_net.py does (each rank gets its
    own OUTPUT_DIR, so whatever a rank writes can be told apart); then rank 1 fails."""
    from detkit.config import load_config
    from detkit.data import DatasetCatalog, load_coco_json
    from detkit.engine import DefaultTrainer, default_setup, resolve_run_state
    from detkit.utils import comm

    rank = comm.get_rank()
    annotations = Path(folder) / "annotations.json"
    DatasetCatalog.register(
        CHILD_DATASET, lambda: load_coco_json(annotations, folder, CHILD_DATASET)
    )
    cfg = load_config(
        REPO / "configs" / "shapes" / "fast_rcnn.yaml",
        [
            *overrides,
            f"DATASETS.TRAIN=[{CHILD_DATASET}]",
            f"DATASETS.PROPOSAL_FILES_TRAIN=[{proposal_file}]",
            f"DATASETS.TEST=[{CHILD_DATASET}]",
            f"DATASETS.PROPOSAL_FILES_TEST=[{proposal_file}]",
            "TEST.EVALUATORS=[coco]",
            f"OUTPUT_DIR={result_dir}/output_rank{rank}",
        ],
    )
    run_state = resolve_run_state(cfg, resume=False)
    trainer = DefaultTrainer(default_setup(cfg, None, run_state), run_state)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    torch.save(
        {"model": trainer.model.state_dict(), "results": results, "iter": trainer.iter},
        f"{result_dir}/rank{rank}.pt",
    )
    if rank == 1:
        raise ValueError("rank 1 gave up on purpose")
    comm.synchronize()  # rank 0 waits here for a rank that will never come


def test_two_processes_train_alike_and_a_failing_rank_fails_the_launch(
    tiny_shapes, tiny_model_overrides: list[str], tmp_path: Path
) -> None:
    overrides = [
        *tiny_model_overrides,
        "SOLVER.MAX_ITER=4",
        "SOLVER.CHECKPOINT_PERIOD=2",
        "SOLVER.IMS_PER_BATCH=2",
    ]
    start = time.monotonic()
    with pytest.raises(Exception, match="rank 1 gave up on purpose"):
        launch(
            train_then_fail_on_rank_one,
            2,
            args=(
                str(tiny_shapes.folder),
                str(tiny_shapes.proposal_file),
                overrides,
                str(tmp_path),
            ),
            backend="gloo",
            timeout=datetime.timedelta(seconds=150),
        )
    # rank 0 was stopped, not left at its barrier until the 150 s process-group timeout
    assert time.monotonic() - start < 100
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["iter"] == rank1["iter"] == 4
    output = tmp_path / "output_rank0"
    # rank 0 writes checkpoints, metrics, config, log and evaluation
    written = {p.name for p in output.iterdir()}
    checkpoints = {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"}
    assert checkpoints <= written
    assert {"metrics.json", "config.yaml", "log.txt", "inference"} <= written
    # rank 1 writes its log only (detectron2's log.txt.rank1): its console shows only errors
    assert [p.name for p in (tmp_path / "output_rank1").iterdir()] == ["log.txt.rank1"]
    # the evaluation gathered both ranks' shares (images 1-4 on rank 0, 5-8 on rank 1)
    assert "bbox" in rank0["results"][CHILD_DATASET] and rank1["results"][CHILD_DATASET] == {}
    predictions = json.loads(
        (output / "inference" / CHILD_DATASET / "coco_instances_results.json").read_text()
    )
    image_ids = {p["image_id"] for p in predictions}
    assert min(image_ids) <= 4 < max(image_ids)

    weights0, weights1 = rank0["model"], rank1["model"]
    assert list(weights0) == list(weights1)
    final = torch.load(output / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[name], value) for name, value in weights0.items())
    # the weights did train: the checkpoint of iteration 1 holds other weights
    early = torch.load(output / "model_0000001.pth", weights_only=True)["model"]
    assert not torch.equal(
        early["roi_heads.box_head.fc6.weight"], final["roi_heads.box_head.fc6.weight"]
    )
    buffers = [
        n for n in weights0 if n.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    parameters = [name for name in weights0 if name not in buffers]
    assert buffers and parameters
    differ = [name for name in parameters if not torch.equal(weights0[name], weights1[name])]
    assert not differ, f"the ranks' parameters disagree: {differ}"
    # BatchNorm statistics too: every rank evaluates its share of the test images with its own
    # model, which must be the model rank 0 saves
    differ = [name for name in buffers if not torch.equal(weights0[name], weights1[name])]
    assert not differ, f"the ranks' BatchNorm buffers disagree: {differ}"
