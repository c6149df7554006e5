"""Sweep throughput here: runs completed per hour at 1, 3, ... concurrent debug runs, and how many it sustains.

    python tests/benchmarks/bench_sweep.py [--concurrent 1 3] [--runs 6] [--budget 2000]

For each K in --concurrent, one `orrery sweep --max-concurrent K` of max(--runs, K) seeds of
dmc-cartpole-swingup+debug (1 actor per run, embedded Redis each) on a private `ray start --head`
with enough logical CPUs for K runs (3 each: driver, learner, actor); the physical cores stay
what they are, so K beyond the cores shows contention. Timed: the whole command, start-up and
the final report included, so runs/hour is what a user gets. A K is "sustained" when every run
finished on its first attempt (no run died or timed out) and the aggregate env-step rate did
not fall below that of the smaller K before it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the private Ray head of the sweep's end-to-end test (tests/ is not installed)

from tests.e2e.ray_support import RayHead  # noqa: E402


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(head: RayHead, concurrent: int, runs: int, budget: int, preset: str, folder: Path) -> dict:
    sweep_dir = folder / f"k{concurrent}"
    lowest = [available_gib()]
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(1.0):
            lowest[0] = min(lowest[0], available_gib())

    threading.Thread(target=watch_memory, daemon=True).start()
    start = time.perf_counter()
    result = head.orrery("sweep", "--preset", preset, "--seeds", f"0:{runs}", "--actors-per-run", "1",
                         "--budget-steps", str(budget), "--max-concurrent", str(concurrent), "--address", head.address,
                         "--sweep-dir", str(sweep_dir), timeout=3600)
    wall = time.perf_counter() - start
    done.set()
    states = json.loads((sweep_dir / "sweep.json").read_text())["runs"] if (sweep_dir / "sweep.json").exists() else {}
    run_seconds, env_steps = [], 0
    for name in states:
        run_dir = sweep_dir / name
        if (run_dir / "summary.json").exists():
            run_seconds.append((run_dir / "summary.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime)
            env_steps += json.loads((run_dir / "summary.json").read_text())["env_steps"]
    finished = sum(run["state"] == "done" for run in states.values())
    return {"concurrent": concurrent, "runs": runs, "finished": finished, "exit_code": result.returncode,
            "retries": sum(max(0, run.get("attempts", 1) - 1) for run in states.values()),
            "wall_s": round(wall, 1), "runs_per_hour": round(3600 * finished / wall, 1),
            "mean_run_s": round(sum(run_seconds) / len(run_seconds), 1) if run_seconds else None,
            "env_steps_per_s": round(env_steps / wall, 1), "min_available_gib": round(lowest[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dmc-cartpole-swingup+debug")
    parser.add_argument("--concurrent", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--runs", type=int, default=6, help="seeds per sweep (at least K)")
    parser.add_argument("--budget", type=int, default=2000, help="env steps per run")
    args = parser.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as tmp, \
            RayHead(num_cpus=3 * max(args.concurrent) + 1, env={"ORRERY_HOME": str(Path(tmp) / "home")}) as head:
        for k in args.concurrent:
            figures.append(measure(head, k, max(args.runs, k), args.budget, args.preset, Path(tmp)))
    sustained = 0
    for before, row in zip([None, *figures], figures):
        ok = row["finished"] == row["runs"] and row["retries"] == 0
        if not ok or (before is not None and row["env_steps_per_s"] < 0.95 * before["env_steps_per_s"]):
            break
        sustained = row["concurrent"]
    print(json.dumps({"results": figures, "sustained_concurrent": sustained, "cpus": os.cpu_count(),
                      "settings": {"preset": args.preset, "runs": args.runs, "budget": args.budget}}))


if __name__ == "__main__":
    main()
