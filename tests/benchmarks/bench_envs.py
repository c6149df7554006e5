"""Env steps per second with rendering, for PlaNet's six DMC tasks (or --tasks), at their action repeats.

    python tests/benchmarks/bench_envs.py [--env-steps 1000] [--tasks dmc:cheetah-run atari:MsPacman]

Prints one JSON line: {"<task>": {"env_steps_per_s", "frames_per_s", "action_repeat"}, ..., "settings": {...}}.
Frames are rendered once per agent step (after the repeat), as actors see them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from common.envs import make_env
from common.envs.tasks import ACTION_REPEAT

PLANET_TASKS = [f"dmc:{name}" for name in ACTION_REPEAT]


def measure(task: str, env_steps: int, seed: int = 0) -> dict:
    env = make_env(task, seed)
    rng = np.random.default_rng(seed)
    env.reset()
    taken = frames = 0
    start = time.perf_counter()
    while taken < env_steps:
        step = env.step(env.spec.action.sample(rng))
        taken, frames = taken + step.env_steps, frames + 1
        if step.last:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return {"env_steps_per_s": round(taken / seconds, 1), "frames_per_s": round(frames / seconds, 1),
            "action_repeat": env.spec.action_repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=PLANET_TASKS)
    parser.add_argument("--env-steps", type=int, default=1000, help="env steps timed per task (after one reset)")
    args = parser.parse_args()
    figures = {task: measure(task, args.env_steps) for task in args.tasks}
    figures["settings"] = {"env_steps": args.env_steps, "image": "64x64x3", "mujoco_gl": os.environ.get("MUJOCO_GL"),
                           "cpus": os.cpu_count(), "machine": platform.machine()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
