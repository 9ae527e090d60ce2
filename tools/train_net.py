"""Trains and evaluates a detector from a config: the standard detkit entry point.

    python tools/train_net.py --config-file configs/shapes/fast_rcnn.yaml
    python tools/train_net.py --config-file FILE --resume             # continue last_checkpoint
    python tools/train_net.py --config-file FILE --eval-only MODEL.WEIGHTS=output/model_final.pth
    python tools/train_net.py --config-file FILE --num-gpus 2         # 2 processes (GPUs or CPU)

Config overrides follow the options as KEY=VALUE (or detectron2's KEY VALUE). Outputs go to
OUTPUT_DIR: config.yaml, log.txt, metrics.json, TensorBoard events, checkpoints and inference/.
"""

from __future__ import annotations

import sys

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import ConfigError, load_config
from detkit.engine import (
    DefaultTrainer,
    check_config,
    default_argument_parser,
    default_setup,
    launch,
    log_results_summary,
    parse_overrides,
)
from detkit.utils import comm


def setup(args):
    """The config of ``args`` (file and overrides), with the process set up to run it."""
    cfg = load_config(args.config_file, parse_overrides(args.opts))
    return default_setup(cfg, args)


def main(args) -> dict:
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR)
        if not cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
            raise ConfigError(
                "--eval-only needs trained weights: give MODEL.WEIGHTS=FILE, or --resume with "
                "a last_checkpoint in OUTPUT_DIR"
            )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = DefaultTrainer.test(cfg, model)
    else:
        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if comm.is_main_process():
        log_results_summary(results)
    return results


def run(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv``; returns the exit status."""
    args = default_argument_parser().parse_args(argv)
    world_size = args.num_gpus * args.num_machines
    try:  # a bad config ends the run here with its message, before any process starts
        cfg = load_config(args.config_file, parse_overrides(args.opts))
        check_config(cfg, world_size)
        backend = "nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo"
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            backend=backend,
        )
    except ConfigError as error:  # raised in this process (before launch, or a 1-process run)
        print(f"train_net: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
