"""Whole-system throughput: env steps/s and learner updates/s of `orrery train` for several actor counts.

    python tests/benchmarks/bench_system.py [--preset dmc-cartpole-swingup+debug] [--actors 1 2] [--budget 3000]
                                            [--set KEY=VALUE ...]

Each actor count is one real run (local Ray, embedded Redis, real dm_control) in a temporary
directory. Rates are taken from the first acknowledged episode to the last, so Ray and
process start-up are left out; evaluation is not timed. ``--set`` overrides config fields as
``orrery train --set`` does (repeatable), e.g. a GPU configuration:

    python tests/benchmarks/bench_system.py --preset dmc-cheetah-run --actors 4 \
        --set cluster.learner_gpus=0.5 --set cluster.actor_gpus=0.1

(``--actors`` and ``--budget`` set cluster.actors and train.budget_env_steps; the benchmark's own
train.eval_episodes=1 gives way to a ``--set``.) Prints one JSON line: ``actors_<N>`` figures and
``settings``, which holds the overrides as given and the values the runs used (``config``); each
``actors_<N>`` also has ``gpu_shares``, the GPU share the driver gave the learner, each actor and an
evaluation (``auto`` resolved; all 0 where Ray sees no GPU), and ``devices``, the driver's log lines
that say so and where each process computes (``learner: cuda:0 (NVIDIA H200, GPU 0), ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence

from cluster.driver import Driver
from common.config import Config, ConfigError, load_config

FLAG_KEYS = {"cluster.actors": "--actors", "train.budget_env_steps": "--budget"}
"""Config fields the benchmark's own flags set (a --set of them is refused)."""
REPORTED = ("env.task", "cluster.learner_gpus", "cluster.actor_gpus", "cluster.envs_per_actor", "train.precision",
            "train.eval_episodes")
"""Fields always named in settings.config, next to every overridden one."""
DEVICE_LINE = re.compile(r"(processes|learner|actor \d+|evaluation): ")
"""Driver log lines kept in the output: the GPU shares, and where each process computes (common/device.py)."""


def run_config(preset: str, actors: int, budget: int, overrides: Sequence[str] = ()) -> Config:
    """The preset, the benchmark's eval_episodes=1, the --set overrides, then --actors/--budget (as the CLI's flags)."""
    return load_config(preset, ["train.eval_episodes=1", *overrides, f"cluster.actors={actors}",
                                f"train.budget_env_steps={budget}"])


def resolved(cfg: Config, overrides: Sequence[str]) -> dict:
    """``section.field: value`` the runs used, for REPORTED and every overridden field."""
    keys = list(REPORTED) + [item.partition("=")[0].strip() for item in overrides]
    out = {}
    for key in dict.fromkeys(keys):
        section, _, name = key.partition(".")
        out[key] = getattr(getattr(cfg, section), name)
    return out


def gpu_shares(driver: Driver) -> dict | None:
    """The GPU share the run gave the learner, each actor and an evaluation (0: the CPU), as the driver resolved them."""
    shares = getattr(driver, "shares", None)
    if shares is None:
        return None
    return {role: getattr(shares, role, None) for role in ("learner", "actor", "evaluation")}


def measure(preset: str, actors: int, budget: int, overrides: Sequence[str] = ()) -> dict:
    cfg = run_config(preset, actors, budget, overrides)
    marks: dict[str, float] = {}

    def tick(driver: Driver) -> None:
        if driver.state.episodes and "first" not in marks:
            marks["first"], marks["first_steps"] = time.perf_counter(), driver.state.env_steps
        marks["last"], marks["last_steps"] = time.perf_counter(), driver.state.env_steps

    with tempfile.TemporaryDirectory() as tmp:
        placed: list[str] = []  # the driver's "processes: ..." line and each process's device line

        def log(line: str) -> None:
            if DEVICE_LINE.match(line):
                placed.append(line)

        driver = Driver(cfg, os.path.join(tmp, f"bench-{actors}"), log=log, show_progress=False)
        updates: list[tuple[float, int]] = []

        def on_tick(d: Driver) -> None:
            tick(d)
            lines = (d.run_dir / "metrics.jsonl").read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
            if "learner/updates" in last:
                updates.append((time.perf_counter(), int(last["learner/updates"])))

        summary = driver.run(on_tick=on_tick)
        shares = gpu_shares(driver)
    seconds = marks["last"] - marks["first"]
    moving = [(t, u) for t, u in updates if u > 0]
    update_rate = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0]) if len(moving) > 1 else 0.0
    return {"env_steps_per_s": round((marks["last_steps"] - marks["first_steps"]) / seconds, 1),
            "updates_per_s": round(update_rate, 2), "env_steps": summary["env_steps"], "updates": summary["updates"],
            "actor_restarts": summary["driver/actor_restarts"], "gpu_shares": shares,
            "devices": placed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dmc-cartpole-swingup+debug")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--budget", type=int, default=3000, help="env steps per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, as orrery train --set, e.g. --set cluster.learner_gpus=0.5 "
                             "(repeatable)")
    args = parser.parse_args()
    for item in args.overrides:
        key = item.partition("=")[0].strip()
        if key in FLAG_KEYS:
            parser.error(f"--set {item}: use {FLAG_KEYS[key]} for {key}")
    try:  # every run's config, checked before the first one starts
        configs = {n: run_config(args.preset, n, args.budget, args.overrides) for n in args.actors}
    except ConfigError as error:
        parser.error(str(error))
    figures = {f"actors_{n}": measure(args.preset, n, args.budget, args.overrides) for n in args.actors}
    figures["settings"] = {"preset": args.preset, "budget": args.budget, "cpus": os.cpu_count(),
                           "overrides": list(args.overrides),
                           "config": resolved(configs[args.actors[0]], args.overrides), "gpus": gpu_count()}
    print(json.dumps(figures, default=str))


def gpu_count() -> int:
    """CUDA devices torch sees in this process (0 with a CPU build), without creating a CUDA context here."""
    try:
        import torch

        return torch.cuda.device_count() if torch.version.cuda or getattr(torch.version, "hip", None) else 0
    except Exception:  # noqa: BLE001 - a figure for the report, never a reason to fail
        return 0


if __name__ == "__main__":
    main()
