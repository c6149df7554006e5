"""How fast the world model learns a task's frames per second of CPU: a learner trained offline on stored episodes.

    python tests/benchmarks/bench_model_learning.py --preset dmc-cartpole-swingup+cpu --seconds 150 \
        [--set train.learning_rate=3e-3 ...] [--data DIR] [--episodes 10]

Collects ``--episodes`` random-policy episodes of the preset's task plus 2 held out (once: they are kept in
``--data``, default /tmp/orrery-bench-data/<task>, and read back by later calls, so every setting compared
sees the same frames), then trains a Learner on B x L windows of them for ``--seconds`` of wall time and
scores the held-out episodes every ``--every`` seconds (not counted in the training time):

- ``image_nll``: per-frame image term of the posterior's reconstructions (what the decoder has learnt);
- ``reward_mse``: squared error of the rewards predicted open loop over the planner's horizon from 5 observed
  frames (what CEM ranks its candidates by);
- ``image_mse_open_loop``: per-pixel squared error of the frames imagined over that horizon.

This is where a run's early episodes are won or lost: the planner is no better than its model. Prints one
JSON line: the settings, and the curve as lists (seconds, updates, frames trained, the three scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from actors.rollout import random_policy, run_episode
from common.config import load_config
from common.envs import make_env_from_config
from common.envs.preprocess import preprocess_observation
from common.episode import decode, encode
from learner.learner import Learner
from learner.losses import image_nll
from learner.model_eval import episode_windows

CONTEXT = 5
HELD_OUT = 2


def episodes_of(cfg, count: int, data: Path) -> list:
    """``count`` + HELD_OUT random episodes of the config's task, read from ``data`` or collected into it."""
    files = sorted(data.glob("*.ep"))
    if len(files) < count + HELD_OUT:
        data.mkdir(parents=True, exist_ok=True)
        env = make_env_from_config(cfg.env, seed=1234)
        for i in range(len(files), count + HELD_OUT):
            episode = run_episode(env, random_policy(env.spec.action, 1234 + i), run="bench", index=i)
            (data / f"{i:03d}.ep").write_bytes(encode(episode))
        env.close()
        files = sorted(data.glob("*.ep"))
    return [decode(path.read_bytes()) for path in files[:count + HELD_OUT]]


@torch.no_grad()
def scores(learner: Learner, windows: tuple, horizon: int, bit_depth: int) -> dict:
    frames, actions, rewards = windows
    model = learner.model
    observations = preprocess_observation(torch.as_tensor(frames).permute(1, 0, 4, 2, 3), bit_depth, noise=False)
    a_tm1 = torch.as_tensor(actions).transpose(0, 1)  # (W, L, A) -> (L, W, A)
    r_tm1 = torch.as_tensor(rewards).transpose(0, 1)
    generator = torch.Generator().manual_seed(0)
    posterior, _ = model.observe(observations, a_tm1, generator=generator)
    reconstruction = float(image_nll(model.decode(posterior), observations))
    context = posterior[CONTEXT - 1]
    predicted = model.imagine_rewards(context, a_tm1[CONTEXT:CONTEXT + horizon])
    imagined = model.imagine_frames(context, a_tm1[CONTEXT:CONTEXT + horizon], generator)
    return {"image_nll": reconstruction,
            "reward_mse": float(((predicted - r_tm1[CONTEXT:CONTEXT + horizon]) ** 2).mean()),
            "image_mse_open_loop": float(((imagined - observations[CONTEXT:CONTEXT + horizon]) ** 2).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dmc-cartpole-swingup+cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--episodes", type=int, default=10, help="training episodes (random policy)")
    parser.add_argument("--data", default="", help="folder of the episodes (default /tmp/orrery-bench-data/<task>)")
    parser.add_argument("--seconds", type=float, default=150.0, help="training wall time")
    parser.add_argument("--every", type=float, default=30.0, help="seconds of training between scores")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=24, help="held-out windows scored")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, args.set)
    data = Path(args.data or f"/tmp/orrery-bench-data/{cfg.env.task.replace(':', '-')}-r{cfg.env.action_repeat}")
    episodes = episodes_of(cfg, args.episodes, data)
    train, held_out = episodes[:-HELD_OUT], episodes[-HELD_OUT:]
    action_size = train[0].actions.shape[-1] if not train[0].discrete else int(train[0].actions.max()) + 1
    horizon = cfg.planner.horizon
    evaluation = episode_windows(held_out, CONTEXT + horizon, args.windows, action_size, seed=99)
    learner = Learner(cfg, action_size, seed=cfg.train.seed)
    batch, length = cfg.train.batch_size, cfg.train.chunk_length
    curve = {"seconds": [], "updates": [], "frames": [], "image_nll": [], "reward_mse": [], "image_mse_open_loop": []}
    trained = updates = 0.0
    while True:
        for key, value in scores(learner, evaluation, horizon, cfg.env.bit_depth).items():
            curve[key].append(round(value, 4))
        curve["seconds"].append(round(trained, 1))
        curve["updates"].append(int(updates))
        curve["frames"].append(int(updates) * batch * length)
        if trained >= args.seconds:
            break
        start = time.perf_counter()
        while time.perf_counter() - start < min(args.every, args.seconds - trained):
            frames, actions, rewards = episode_windows(train, length, batch, action_size, seed=int(updates) + 1)
            learner.update({"observations": frames, "actions": actions, "rewards": rewards})
            updates += 1
        trained += time.perf_counter() - start
    print(json.dumps({"preset": args.preset, "set": args.set, "episodes": args.episodes, "threads": args.threads,
                      "batch": batch, "length": length, "curve": curve}))


if __name__ == "__main__":
    main()
