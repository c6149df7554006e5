"""Evaluation: episodes planned without exploration noise, a random-policy baseline, open-loop videos.

Writes into ``RUN_DIR/eval``: ``returns.json`` (planner and random returns), ``open_loop.gif``
(truth | model, frame by frame) and ``open_loop.png`` (the same as a still strip).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from actors.actor import Actor
from actors.rollout import random_policy, run_episode
from common.config import Config
from common.envs import make_env_from_config
from common.images import comparison_grid, write_png
from learner.open_loop import predict_episode


def evaluate(cfg: Config, weights: Mapping[str, torch.Tensor], version: int, *, episodes: int, seed: int,
             run: str) -> dict:
    """Plan ``episodes`` episodes with the given weights (no exploration) and as many random ones."""
    actor = Actor(cfg, index=0, run=run, seed=seed, write=lambda episode: None)
    actor.load_weights(version, weights)
    planned = actor.run_episodes(episodes, explore=False)[:episodes]
    actor.close()
    env = make_env_from_config(cfg.env, seed)
    random = [run_episode(env, random_policy(env.spec.action, seed + i), run=run, index=i) for i in range(episodes)]
    env.close()
    returns = [float(e.rewards.sum()) for e in planned]
    random_returns = [float(e.rewards.sum()) for e in random]
    return {"policy_version": version, "returns": returns, "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "random_returns": random_returns,
            "random_return_mean": float(np.mean(random_returns)), "random_return_std": float(np.std(random_returns)),
            "episodes": planned, "model": actor.model}


def describe(result: dict) -> str:
    """'return 153.0 ± 1.3; random policy 127.4 ± 44.5': planner against random, as users read it."""
    return (f"return {result['return_mean']:.1f} ± {result['return_std']:.1f}; random policy "
            f"{result['random_return_mean']:.1f} ± {result['random_return_std']:.1f}")


def write_results(run_dir: Path, result: dict, *, env_steps: int, bit_depth: int, context: int = 5,
                  horizon: int = 50) -> dict[str, str]:
    """returns.json, and the open-loop prediction of the first evaluation episode as GIF and PNG."""
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k not in ("episodes", "model")}
    summary.update({"env_steps": env_steps, "time": time.time()})
    (out / "returns.json").write_text(json.dumps(summary, indent=2))
    episode = result["episodes"][0]
    truth, predicted = predict_episode(result["model"], episode, context=min(context, episode.length),
                                       horizon=horizon, bit_depth=bit_depth, generator=torch.Generator().manual_seed(0))
    write_png(out / "open_loop.png", comparison_grid([truth, predicted], count=10))
    write_gif(out / "open_loop.gif", np.concatenate([truth, predicted], axis=2))  # (P, H, 2W, 3): truth | model
    return {"returns": str(out / "returns.json"), "gif": str(out / "open_loop.gif"), "png": str(out / "open_loop.png")}


def write_gif(path: Path, frames: np.ndarray, scale: int = 3, ms_per_frame: int = 100) -> Path:
    """(T, H, W, 3) uint8 -> looping animated GIF, each pixel ``scale`` x ``scale``."""
    from PIL import Image

    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(frame) for frame in big]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path
