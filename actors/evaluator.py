"""Evaluation: episodes planned without exploration noise, a random-policy baseline, open-loop videos.

Writes into ``RUN_DIR/eval``: ``returns.json`` (planner and random returns), ``open_loop.gif``
(truth | model, frame by frame) and ``open_loop.png`` (the same as a still strip). The files are
rendered to bytes first (:func:`render_results`), so an evaluation that runs on another node
(actors/worker.py: ``evaluation_task``) hands them to the driver, which writes them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from actors.actor import Actor
from actors.rollout import random_policy, run_episode
from common.config import Config
from common.envs import make_env_from_config
from common.fileio import write_atomic
from common.images import comparison_grid, encode_png
from learner.open_loop import predict_episode


EVAL_ENVS = 5
"""Most environments an evaluation plans for in one batch (:func:`eval_envs`).

On one CPU core a plan for 5 environments at the cpu preset's sizes takes 3.6x the time of a plan for one
(tests/benchmarks/bench_planner.py --batch), so 10 evaluation episodes cost 28 % less planning in two
rounds of 5; a batch of 10 gained nothing more there (the working set outgrows the cache).
"""


def eval_envs(episodes: int) -> int:
    """Environments that play ``episodes`` evaluation episodes in the fewest rounds of at most EVAL_ENVS, with
    the rounds as even as possible (10 -> 5, 7 -> 4: 8 played, the first 7 kept; 3 -> 3)."""
    rounds = math.ceil(episodes / EVAL_ENVS)
    return math.ceil(episodes / rounds)


def evaluate(cfg: Config, weights: Mapping[str, torch.Tensor], version: int, *, episodes: int, seed: int,
             run: str, device: torch.device | str = "cpu", precision: str = "float32",
             random_returns: list[float] | None = None) -> dict:
    """Plan ``episodes`` episodes with the given weights (no exploration) and as many random ones.

    The planned episodes play :func:`eval_envs` at a time (environment k seeded ``seed + k``).

    ``device`` and ``precision``: where and how the planner's model calls run, as in the actors
    (common/device.py decides both).
    ``random_returns``: the random baseline of an earlier evaluation with the same seed, reused
    instead of playing it again (it does not depend on the weights).
    """
    start = time.perf_counter()
    batched = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, envs_per_actor=eval_envs(episodes)))
    actor = Actor(batched, index=0, run=run, seed=seed, write=lambda episode: None, device=str(device),
                  precision=precision)
    actor.load_weights(version, weights)
    planned = actor.run_episodes(episodes, explore=False)[:episodes]
    actor.close()
    if random_returns is None:
        env = make_env_from_config(cfg.env, seed)
        random = [run_episode(env, random_policy(env.spec.action, seed + i), run=run, index=i) for i in range(episodes)]
        random_returns = [float(episode.rewards.sum()) for episode in random]
        env.close()
    returns = [float(e.rewards.sum()) for e in planned]
    return {"policy_version": version, "returns": returns, "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "random_returns": random_returns,
            "random_return_mean": float(np.mean(random_returns)), "random_return_std": float(np.std(random_returns)),
            "seconds": time.perf_counter() - start, "episodes": planned, "model": actor.model}


def describe(result: dict) -> str:
    """'return 153.0 ± 1.3; random policy 127.4 ± 44.5': planner against random, as users read it."""
    return (f"return {result['return_mean']:.1f} ± {result['return_std']:.1f}; random policy "
            f"{result['random_return_mean']:.1f} ± {result['random_return_std']:.1f}")


def verdict(result: dict) -> str:
    """Planning against the random policy in one phrase: "clearly beats ..." only when the planned returns' mean
    less its std is above the random mean plus its std (both spreads apart), with the ratio of the means."""
    plan, plan_std = result["return_mean"], result["return_std"]
    rand, rand_std = result["random_return_mean"], result["random_return_std"]
    ratio = f"{plan / rand:.1f}x the random policy's return" if rand > 0 else f"{plan - rand:+.1f} over random"
    if plan - plan_std > rand + rand_std:
        return f"planning clearly beats the random policy: {ratio}, beyond both spreads"
    if plan > rand:
        return f"planning is ahead of the random policy but within the spreads ({ratio}): not yet clearly better"
    return f"planning is not better than the random policy yet ({ratio})"


def summarize(result: dict, env_steps: int) -> dict:
    """The numbers of an evaluation (what returns.json holds): no episodes, no model."""
    return {**{k: v for k, v in result.items() if k not in ("episodes", "model")}, "env_steps": env_steps,
            "time": time.time()}


def render_results(result: dict, *, env_steps: int, bit_depth: int, context: int = 5,
                   horizon: int = 50) -> dict[str, bytes]:
    """File name -> bytes: returns.json, and the open-loop prediction of the first evaluation episode as GIF and PNG."""
    episode = result["episodes"][0]
    truth, predicted = predict_episode(result["model"], episode, context=min(context, episode.length),
                                       horizon=horizon, bit_depth=bit_depth, generator=_generator(result["model"]))
    return {"returns.json": json.dumps(summarize(result, env_steps), indent=2).encode(),
            "open_loop.png": encode_png(comparison_grid([truth, predicted], count=10)),
            "open_loop.gif": encode_gif(np.concatenate([truth, predicted], axis=2))}  # (P, H, 2W, 3): truth | model


def _generator(model: torch.nn.Module) -> torch.Generator:
    """A seeded generator on the model's device (a CPU one cannot draw into CUDA tensors)."""
    return torch.Generator(next(model.parameters()).device).manual_seed(0)


def write_files(run_dir: Path, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write rendered results into RUN_DIR/eval (each atomically); returns {"returns", "gif", "png"} paths."""
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(out / name, data)
    return {"returns": str(out / "returns.json"), "gif": str(out / "open_loop.gif"), "png": str(out / "open_loop.png")}


def write_results(run_dir: Path, result: dict, *, env_steps: int, bit_depth: int) -> dict[str, str]:
    """:func:`render_results` written into RUN_DIR/eval."""
    return write_files(run_dir, render_results(result, env_steps=env_steps, bit_depth=bit_depth))


def encode_gif(frames: np.ndarray, scale: int = 3, ms_per_frame: int = 100) -> bytes:
    """(T, H, W, 3) uint8 -> a looping animated GIF, each pixel ``scale`` x ``scale``."""
    from PIL import Image

    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(frame) for frame in big]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return buffer.getvalue()
