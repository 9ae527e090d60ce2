"""FLOPs and parameter counts of a detector from its config, per module, for one image and N
proposals (fvcore's counters; detkit's RoI ops counted by the rules of detkit.utils.analysis).

    python tools/analyze_model.py --config-file configs/Base-FastRCNN.yaml \\
        --tasks flop parameter [--image-size 600 1000] [--num-proposals 2000] [--depth 3] \\
        MODEL.ROI_HEADS.NUM_CLASSES=20

The image is random (uint8) at ``--image-size`` (default: INPUT.MIN_SIZE_TEST by
INPUT.MAX_SIZE_TEST), the proposals random boxes inside it; weights are the config's
(random unless MODEL.WEIGHTS is given). The score threshold is set to 0 so the predictor's
post-processing runs on every proposal. A flop here is one fused multiply-add, as fvcore counts.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from detkit.engine.tool_setup import run_tool, setup_config, tool_argument_parser
from detkit.export import random_boxes
from detkit.modeling import build_model
from detkit.utils.analysis import flop_count_analysis
from detkit.utils.arguments import positive_int

TASKS = ("flop", "parameter")


def argument_parser() -> argparse.ArgumentParser:
    parser = tool_argument_parser(__doc__, "the detector's config")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--image-size", nargs=2, type=positive_int, metavar=("H", "W"))
    parser.add_argument("--num-proposals", type=positive_int, default=2000)
    parser.add_argument("--depth", type=int, default=3, help="module depth of the tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("analyze_model", argument_parser(), analyze, argv)


def analyze(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():  # importing fvcore.nn scripts functions, which torch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import flop_count_table, parameter_count_table

    # on the CPU, with every proposal scored: set before set-up, after which cfg is read-only
    args.opts = [*args.opts, "MODEL.DEVICE=cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0"]
    cfg = setup_config(args)
    model = build_model(cfg)
    if "parameter" in args.tasks:
        print(parameter_count_table(model, max_depth=args.depth))
    if "flop" in args.tasks:
        height, width = args.image_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
        boxes = random_boxes(args.num_proposals, height, width)
        with torch.no_grad():
            analysis = flop_count_analysis(model, image, boxes)
            print(
                f"FLOPs (fused multiply-adds) for one {height}x{width} image and "
                f"{args.num_proposals} proposals: {analysis.total() / 1e9:.2f} G"
            )
            print(flop_count_table(analysis, max_depth=args.depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
