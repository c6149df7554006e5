"""Whole-system throughput: env steps/s and learner updates/s of `orrery train` for several actor counts.

    python tests/benchmarks/bench_system.py [--preset dmc-cartpole-swingup+debug] [--actors 1 2] [--budget 3000]

Each actor count is one real run (local Ray, embedded Redis, real dm_control) in a temporary
directory. Rates are taken from the first acknowledged episode to the last, so Ray and
process start-up are left out; evaluation is not timed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from cluster.driver import Driver
from common.config import load_config


def measure(preset: str, actors: int, budget: int) -> dict:
    cfg = load_config(preset, [f"cluster.actors={actors}", f"train.budget_env_steps={budget}", "train.eval_episodes=1"])
    marks: dict[str, float] = {}

    def tick(driver: Driver) -> None:
        if driver.state.episodes and "first" not in marks:
            marks["first"], marks["first_steps"] = time.perf_counter(), driver.state.env_steps
        marks["last"], marks["last_steps"] = time.perf_counter(), driver.state.env_steps

    with tempfile.TemporaryDirectory() as tmp:
        driver = Driver(cfg, os.path.join(tmp, f"bench-{actors}"), log=lambda line: None, show_progress=False)
        updates: list[tuple[float, int]] = []

        def on_tick(d: Driver) -> None:
            tick(d)
            lines = (d.run_dir / "metrics.jsonl").read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
            if "learner/updates" in last:
                updates.append((time.perf_counter(), int(last["learner/updates"])))

        summary = driver.run(on_tick=on_tick)
    seconds = marks["last"] - marks["first"]
    moving = [(t, u) for t, u in updates if u > 0]
    update_rate = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0]) if len(moving) > 1 else 0.0
    return {"env_steps_per_s": round((marks["last_steps"] - marks["first_steps"]) / seconds, 1),
            "updates_per_s": round(update_rate, 2), "env_steps": summary["env_steps"], "updates": summary["updates"],
            "actor_restarts": summary["driver/actor_restarts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dmc-cartpole-swingup+debug")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--budget", type=int, default=3000, help="env steps per run")
    args = parser.parse_args()
    figures = {f"actors_{n}": measure(args.preset, n, args.budget) for n in args.actors}
    figures["settings"] = {"preset": args.preset, "budget": args.budget, "cpus": os.cpu_count()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
