"""Milliseconds per learner update at PlaNet's sizes (B=50 chunks of L=50 steps, 64x64x3 frames).

    python tests/benchmarks/bench_learner.py --device cpu --threads 2 [--precision bfloat16|float32]
    python tests/benchmarks/bench_learner.py --device cuda [--compile]
    python tests/benchmarks/bench_learner.py --preset cpu --batch 16 --length 32 --threads 1   # the cpu preset

Prints one JSON line: {"ms_per_update": median, "ms_min", "ms_max", ...settings, "cpu", "torch"}.
The batch is random frames and actions: the cost of an update does not depend on their content.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from common.config import load_config
from common.device import setup_process
from learner.learner import Learner


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--action-size", type=int, default=6)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--family", default="rssm")
    parser.add_argument("--overshooting", type=int, default=0, help="latent overshooting distance (0: off)")
    parser.add_argument("--image-fraction", type=float, default=1.0, help="share of frames decoded (loss.image_fraction)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--preset", default="", help="model sizes of a preset (e.g. cpu); --batch/--length still apply")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (compilation happens there)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, [f"model.family={args.family}", f"train.batch_size={args.batch}",
                           f"train.chunk_length={args.length}", f"loss.overshooting_distance={args.overshooting}",
                           f"train.precision={args.precision}", f"loss.image_fraction={args.image_fraction}"])
    learner = Learner(cfg, args.action_size, device=args.device, compile=args.compile)
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.integers(0, 256, (args.batch, args.length, 64, 64, 3), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (args.batch, args.length, args.action_size)).astype(np.float32),
        "rewards": rng.normal(size=(args.batch, args.length)).astype(np.float32),
    }
    if learner.device.type == "cuda":
        setup_process("bench", device=args.device, precision=args.precision, threads=args.threads or 2)  # TF32, cuDNN autotuning, as in a run
    staged = learner.stage(batch)  # what the prefetcher hands the learner: pinned on a GPU
    compile_start = time.perf_counter()
    for _ in range(args.warmup):  # allocator, oneDNN/cuDNN kernel choice, compilation: not timed
        learner.update(staged)
    synchronize(learner.device)
    warmup_s = time.perf_counter() - compile_start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        learner.update(staged)
        # update() returns once the metrics are on the host, with the optimiser step still queued on a GPU:
        # the clock stops when that step has finished too.
        synchronize(learner.device)
        times.append(1000 * (time.perf_counter() - start))
    print(json.dumps({
        "ms_per_update": round(statistics.median(times), 1), "ms_min": round(min(times), 1),
        "ms_max": round(max(times), 1), "device": args.device, "threads": torch.get_num_threads(),
        "precision": learner.precision, "batch": args.batch, "length": args.length, "family": args.family,
        "preset": args.preset, "overshooting": args.overshooting, "image_fraction": args.image_fraction, "compile": args.compile, "repeats": args.repeats,
        "warmup": args.warmup, "warmup_s": round(warmup_s, 1),
        "cpu": cpu_model(), "gpu": torch.cuda.get_device_name() if learner.device.type == "cuda" else None,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
