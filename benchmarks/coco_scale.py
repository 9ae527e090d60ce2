"""Start-up of a training run at COCO's scale: time from the command to the first iteration and
the memory it takes, on a synthetic set of COCO's shape. docs/benchmarks.md gives the figures.

    .venv/bin/python benchmarks/coco_scale.py --images 20000 [--processes 1 2] [--root DIR]

The set (built once under ``--root``, seeded, reused while its parameters are the same): one
640x480 JPEG and ``--images`` symbolic links to it, a COCO instances JSON with about 7.3 boxes
per image (COCO train2017's mean) over COCO's 80 sparse category ids, and a detectron2-layout
proposal pickle with ``--proposals`` float32 boxes and logits per image (2,000 as detectron2's
RPN file). Its converted forms (detkit.data.cache) go to a folder of the set's own.

Measured, each as a separate process:

1. ``prepare``: ``tools/prepare_data.py`` with no converted form in place: the one-time
   conversion of the annotations and the proposal file; its time and peak resident memory;
2. ``cold``: ``tools/train_net.py`` with no converted form in place (it converts first);
3. ``warm``: ``tools/train_net.py`` with the converted forms in place, once per
   ``--processes`` count.

``train_net`` trains ``configs/COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml`` for one iteration
(random weights, 2 images per process at a short side of 320, so the step itself is short).
Reported per run: seconds from the command to ``Starting training`` (the first iteration's
start) and to the end; the peak resident memory (VmHWM) and the peak anonymous memory (RssAnon:
what a process holds privately, page cache excluded) of the training process(es); the peak over
time of the proportional set size (PSS: a page shared by k processes counts 1/k in each) summed
over every process of the run (launcher, training processes, loader workers); and of that sum,
the part in the converted forms' files, which the processes map and share.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "COCO-Detection" / "fast_rcnn_R_50_FPN_1x.yaml"
WIDTH, HEIGHT = 640, 480
BOXES_PER_IMAGE = 7.3  # COCO train2017: 860k annotations on 118k images
# COCO's 80 category ids: 1..90 without the 10 that were never used.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
FIRST_ITERATION = "Starting training from iteration"


@dataclass(frozen=True)
class SyntheticSet:
    folder: Path
    annotations: Path
    image_root: Path
    proposals: Path


def build_set(root: Path, images: int, proposals: int, seed: int) -> SyntheticSet:
    """The synthetic set for these parameters under ``root``, built unless already there."""
    folder = root / f"coco_scale_{images}_{proposals}_{seed}"
    made = SyntheticSet(
        folder, folder / "annotations.json", folder / "images", folder / "proposals.pkl"
    )
    stamp = folder / "complete"
    if stamp.is_file():
        return made
    made.image_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), np.uint8)
    cv2.imwrite(str(folder / "picture.jpg"), cv2.resize(picture, (WIDTH, HEIGHT)))
    ids = np.sort(rng.choice(np.arange(1, 600_000), images, replace=False)).tolist()
    image_entries, annotations = [], []
    for image_id in ids:
        name = f"{image_id:012d}.jpg"
        link = made.image_root / name
        if not link.is_symlink():
            link.symlink_to("../picture.jpg")
        image_entries.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for _ in range(rng.poisson(BOXES_PER_IMAGE)):
            w, h = rng.uniform(8, [WIDTH / 2, HEIGHT / 2])
            x, y = rng.uniform(0, [WIDTH - w, HEIGHT - h])
            box = [round(float(v), 2) for v in (x, y, w, h)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": f"class_{i}"} for i in COCO_CATEGORY_IDS]
    made.annotations.write_text(
        json.dumps({"images": image_entries, "annotations": annotations, "categories": categories})
    )
    write_proposals(made.proposals, ids, proposals, rng)
    stamp.touch()
    return made


def write_proposals(path: Path, ids: list[int], count: int, rng: np.random.Generator) -> None:
    """A detectron2-layout pickle: ``count`` XYXY float32 boxes per image, logits descending."""
    boxes, logits = [], []
    for _ in ids:
        x1y1 = rng.uniform(0, [WIDTH - 16, HEIGHT - 16], (count, 2)).astype(np.float32)
        size = rng.uniform(8, [WIDTH / 2, HEIGHT / 2], (count, 2)).astype(np.float32)
        x2y2 = np.minimum(x1y1 + size, np.float32([WIDTH, HEIGHT]))
        boxes.append(np.concatenate([x1y1, x2y2], axis=1))
        logits.append(np.sort(rng.standard_normal(count).astype(np.float32))[::-1].copy())
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as file:
        pickle.dump({"ids": ids, "boxes": boxes, "objectness_logits": logits, "bbox_mode": 0}, file)
    partial.rename(path)


def write_config(synthetic: SyntheticSet, processes: int) -> Path:
    """A config over the COCO R50-FPN one that trains one short iteration on the set."""
    path = synthetic.folder / f"config_{processes}.yaml"
    path.write_text(
        f"""_BASE_: {CONFIG}
MODEL:
  WEIGHTS: ""
  DEVICE: cpu
  ROI_HEADS:
    NUM_CLASSES: 0
DATASETS:
  REGISTER:
    - {{NAME: coco_scale_train, FORMAT: coco, JSON_FILE: {synthetic.annotations},
        IMAGE_ROOT: {synthetic.image_root}}}
  TRAIN: [coco_scale_train]
  TEST: []
  PROPOSAL_FILES_TRAIN: [{synthetic.proposals}]
  PROPOSAL_FILES_TEST: []
INPUT:
  MIN_SIZE_TRAIN: [320]
  MAX_SIZE_TRAIN: 533
SOLVER:
  IMS_PER_BATCH: {2 * processes}
  MAX_ITER: 1
  STEPS: []
  WARMUP_ITERS: 0
"""
    )
    return path


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                queue += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def proc_kib(pid: int, file: str, field_name: str) -> int | None:
    """A ``field_name: N kB`` line of /proc/PID/FILE, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def mapped_pss_kib(pid: int, folder: Path) -> int:
    """The PSS of a process's mappings of files under ``folder``."""
    total, inside = 0, False
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            if not line[:1].isupper():  # a mapping's header line: address range ... path
                inside = str(folder) in line
            elif inside and line.startswith("Pss:"):
                total += int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return total


@dataclass
class MemorySampler:
    """Samples a process tree until stopped: each process's VmHWM and RssAnon, the summed PSS
    and the summed PSS of the mappings of files under ``cache``."""

    root: int
    cache: Path
    peak_rss_kib: dict[int, int] = field(default_factory=dict)
    peak_anon_kib: dict[int, int] = field(default_factory=dict)
    peak_pss_kib: int = 0
    peak_cache_pss_kib: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            total = cached = 0
            for pid in process_tree(self.root):
                for name, peaks in (("VmHWM", self.peak_rss_kib), ("RssAnon", self.peak_anon_kib)):
                    value = proc_kib(pid, "status", name)
                    if value is not None:
                        peaks[pid] = max(peaks.get(pid, 0), value)
                total += proc_kib(pid, "smaps_rollup", "Pss") or 0
                cached += mapped_pss_kib(pid, self.cache)
            self.peak_pss_kib = max(self.peak_pss_kib, total)
            self.peak_cache_pss_kib = max(self.peak_cache_pss_kib, cached)
            self.stop.wait(0.5)


@dataclass
class RunResult:
    what: str  # prepare, cold or warm
    processes: int
    to_first_iteration_s: float | None
    to_end_s: float
    exit_status: int
    peak_rss_mb: list[float]  # the largest processes first (the training processes)
    peak_anon_mb: list[float]
    peak_pss_sum_mb: float
    peak_cache_pss_mb: float  # of that sum, the pages of the converted forms


def run_command(
    what: str,
    command: list[str],
    processes: int,
    cache: Path,
    log: Path,
    timeout: float,
    repo: Path = REPO,
) -> RunResult:
    """Runs ``command`` (a tool of the detkit checkout ``repo``) with converted forms under
    ``cache``, timed and sampled."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DETKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(repo)},
    )
    sampler = MemorySampler(process.pid, cache)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    first_iteration, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if first_iteration is None and FIRST_ITERATION in line:
            first_iteration = time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            process.kill()
    status = process.wait()
    end = time.perf_counter() - start
    sampler.stop.set()
    thread.join()
    log.write_text("".join(lines))
    if status != 0:
        print("".join(lines[-20:]), file=sys.stderr)

    def largest(peaks: dict[int, int]) -> list[float]:
        return sorted((kib / 1024 for kib in peaks.values()), reverse=True)

    return RunResult(
        what,
        processes,
        first_iteration,
        end,
        status,
        largest(sampler.peak_rss_kib),
        largest(sampler.peak_anon_kib),
        sampler.peak_pss_kib / 1024,
        sampler.peak_cache_pss_kib / 1024,
    )


def train_command(repo: Path, config: Path, processes: int, output: Path) -> list[str]:
    shutil.rmtree(output, ignore_errors=True)
    return [
        sys.executable, str(repo / "tools" / "train_net.py"), "--config-file", str(config),
        "--num-gpus", str(processes), f"OUTPUT_DIR={output}",
    ]  # fmt: skip


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time and memory from the command to the first iteration at COCO's scale."
    )
    parser.add_argument("--images", type=int, default=20000, help="images in the set")
    parser.add_argument("--proposals", type=int, default=2000, help="proposals per image")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--root", type=Path, default=REPO / "output" / "coco_scale", help="where sets are built"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="the detkit checkout whose tools run (e.g. an earlier commit's, in a git worktree "
        "with the built extension copied in); one without tools/prepare_data.py, which converts "
        "nothing, is timed warm only",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    start = time.perf_counter()
    synthetic = build_set(args.root, args.images, args.proposals, args.seed)
    source_mb = synthetic.proposals.stat().st_size / 2**20
    print(
        f"set: {args.images} images, proposal file {source_mb:.0f} MB "
        f"({time.perf_counter() - start:.0f} s to build or find) in {synthetic.folder}"
    )
    cache, folder, repo = synthetic.folder / "cache", synthetic.folder, args.repo.resolve()
    one = write_config(synthetic, 1)
    results, store_mb = [], 0.0
    prepare = [sys.executable, str(repo / "tools" / "prepare_data.py"), "--config-file", str(one)]
    if Path(prepare[1]).is_file():
        shutil.rmtree(cache, ignore_errors=True)
        results.append(
            run_command("prepare", prepare, 1, cache, folder / "prepare.log", args.timeout, repo)
        )
        store_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
        shutil.rmtree(cache, ignore_errors=True)
        command = train_command(repo, one, 1, folder / "run_cold")
        log = folder / "cold.log"
        results.append(run_command("cold", command, 1, cache, log, args.timeout, repo))
    for processes in args.processes:
        config = write_config(synthetic, processes)
        command = train_command(repo, config, processes, folder / "run")
        log = folder / f"warm_{processes}.log"
        results.append(run_command("warm", command, processes, cache, log, args.timeout, repo))
    for result in results:
        first = result.to_first_iteration_s
        rss = ", ".join(f"{mb:.0f}" for mb in result.peak_rss_mb[: result.processes + 1])
        anon = ", ".join(f"{mb:.0f}" for mb in result.peak_anon_mb[: result.processes])
        print(
            f"{result.what} ({result.processes} process(es)): first iteration after "
            f"{'-' if first is None else f'{first:.1f}'} s, end {result.to_end_s:.1f} s, "
            f"exit {result.exit_status}; peak RSS {rss} MB, peak RssAnon {anon} MB; peak "
            f"summed PSS {result.peak_pss_sum_mb:.0f} MB, of it converted forms "
            f"{result.peak_cache_pss_mb:.0f} MB",
            flush=True,
        )
    print(f"converted forms on disk: {store_mb:.0f} MB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "images": args.images,
                    "proposals": args.proposals,
                    "proposal_file_mb": source_mb,
                    "converted_mb": store_mb,
                    "repo": str(repo),
                    "runs": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 0 if all(r.exit_status == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
