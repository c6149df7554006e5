"""Speed and likelihood of every model family, Buesing et al.'s comparison: ar, dssm, sssm, rssm, sssm-j2, sssm-j4.

    python tests/benchmarks/bench_models.py --threads 2 [--data atari:MsPacman | synthetic] [--updates 200]
                                            [--sizes default | cpu] [--device cpu | cuda]

Each model, at the system's default sizes (``--sizes cpu``: the cpu preset's smaller encoder and
decoder), is trained for ``--updates`` learner updates on B x L chunks of the data, then measured:

- ``nll_bits_per_dim``: per-frame negative log-likelihood in bits per pixel dimension
  (learner.model_eval.prediction_nll) of open-loop predictions after 5 observed frames, averaged over
  agent steps 4, 8 and 12: the frames every model predicts, jumpy j = 4 included. On held-out data.
- ``latent_steps_per_s``: agent steps covered per second by the latent rollout planning uses
  (``imagine_rewards``), batch 32, 12 agent steps; ``frames_per_s``: frames decoded per second
  by an imagined rollout (``imagine_frames``), the same batch and steps. ``*_b1``: at batch 1.
  With ``--device cuda`` (default cpu) the training and likelihood run on the GPU, and
  ``cuda_latent_steps_per_s`` and ``cuda_frames_per_s`` are the rollouts timed there (the plain keys
  stay CPU figures, so the ratios compare like with like). ``train_s``: wall time of the ``--updates``
  updates; ``update_ms``: mean ms per update after the first ``--warmup-updates`` (cuDNN autotuning,
  allocator growth, lazy initialisation), the clock read only after torch.cuda.synchronize() on a GPU.
  On a GPU, float32 means TF32 matmuls and convolutions with cuDNN autotuning, as in ``orrery train``.

Data: ``atari:<Game>`` collects random-policy episodes of the game (frame skip 4, 64x64; the
system's own Atari environment) -- ``--episodes`` to train on and 2 held out -- and samples
chunks uniformly from them; ``synthetic`` is the moving square of the world-model tests.

Prints one JSON line: {model name: {figures}, ..., "ratios": {...}, "settings": {...}}, where
``ratios`` holds the paper's two findings as measured here: each state-space model's latent rollout
speed over ar's, and sssm-j4's covered agent steps per second over sssm's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.synthetic, when run as a script

from common.config import load_config  # noqa: E402
from learner.learner import Learner  # noqa: E402
from learner.model_eval import episode_windows, prediction_nll, rollout_speed  # noqa: E402
from tests.synthetic import moving_square  # noqa: E402

MODELS = {"ar": ("ar", 1), "dssm": ("dssm", 1), "sssm": ("sssm", 1), "rssm": ("rssm", 1),
          "sssm-j2": ("sssm", 2), "sssm-j4": ("sssm", 4)}
CONTEXT, HORIZON, SCORED = 5, 12, (4, 8, 12)
SIZES = {"default": "", "cpu": "cpu"}
"""--sizes -> the preset the models are built from (none: PlaNet's defaults, cnn_depth 32)."""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


class Data:
    """Training chunks and held-out windows in the replay batch layout (actions one-hot for Atari)."""

    def __init__(self, name: str, episodes: int, seed: int):
        self.name = name
        if name == "synthetic":
            self.action_size = 2
            self.train_episodes = self.held_out = None
            return
        from actors.rollout import random_policy, run_episode
        from common.envs import make_env

        env = make_env(name, seed, max_env_steps=8000)
        self.action_size = env.spec.action.size
        collected = [run_episode(env, random_policy(env.spec.action, seed + i), run="bench", index=i)
                     for i in range(episodes + 2)]
        env.close()
        self.train_episodes, self.held_out = collected[:episodes], collected[episodes:]

    def chunks(self, batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
        if self.name == "synthetic":
            return moving_square(batch, length, seed)
        frames, actions, rewards = episode_windows(self.train_episodes, length, batch, self.action_size, seed)
        return {"observations": frames, "actions": actions, "rewards": rewards}

    def windows(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self.name == "synthetic":
            chunk = moving_square(count, CONTEXT + HORIZON, seed=10_000)
            return chunk["observations"], chunk["actions"]
        frames, actions, _ = episode_windows(self.held_out, CONTEXT + HORIZON, count, self.action_size, seed=10_000)
        return frames, actions


class CopyLastFrame(torch.nn.Module):
    """The reference every prediction should beat: each future frame is the last observed one."""

    jump, action_size = 1, 0

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # prediction_nll reads the device from a parameter

    def open_loop(self, context, context_actions, actions, generator=None):
        return context, context[-1:].expand(actions.shape[0], *context.shape[1:])


def scored_bits(model, data: Data, args, device: str) -> float:
    """Mean bits per dimension at the SCORED steps on the held-out windows."""
    frames, actions = data.windows(args.windows)
    nll = prediction_nll(model, frames, actions, context=CONTEXT, samples=args.samples,
                         generator=torch.Generator(device).manual_seed(0))
    bits = dict(zip(nll["steps"], nll["bits_per_dim"]))
    return round(float(np.mean([bits[k] for k in SCORED])), 4)


def clock(device: torch.device) -> float:
    """perf_counter once the device's queued work is done (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure(name: str, data: Data, args) -> dict[str, float]:
    family, jump = MODELS[name]
    cfg = load_config(SIZES[args.sizes], [f"model.family={family}", f"model.jump={jump}",
                                          f"train.batch_size={args.batch}", f"train.chunk_length={args.length}",
                                          f"planner.horizon={HORIZON}"])
    torch.manual_seed(0)
    device = torch.device(args.device)
    learner = Learner(cfg, data.action_size, device=device, seed=0, precision=args.precision)
    start = warm = clock(device)
    for i in range(args.updates):
        learner.update(data.chunks(args.batch, args.length, seed=i))
        if i + 1 == args.warmup_updates:
            warm = clock(device)
    end = clock(device)
    train_s = end - start
    timed = args.updates - args.warmup_updates
    model = learner.model
    row = {"nll_bits_per_dim": scored_bits(model, data, args, device)}
    if device.type == "cuda":
        for key, value in rollout_speed(model, args.rollouts, HORIZON, repeats=args.repeats).items():
            row[f"cuda_{key}"] = round(value, 1)
    model.to("cpu")
    for batch, suffix in ((args.rollouts, ""), (1, "_b1")):
        for key, value in rollout_speed(model, batch, HORIZON, repeats=args.repeats).items():
            row[key + suffix] = round(value, 1)
    row["train_s"] = round(train_s, 1)
    row["update_ms"] = round(1000 * (end - warm) / timed, 1) if timed > 0 else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="atari:MsPacman", help="atari:<Game> or synthetic")
    parser.add_argument("--episodes", type=int, default=6, help="random-policy episodes to train on (Atari)")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--sizes", default="default", choices=list(SIZES),
                        help="model sizes: the defaults or the cpu preset's")
    parser.add_argument("--batch", type=int, default=16, help="B: chunks per update")
    parser.add_argument("--length", type=int, default=24, help="L: agent steps per chunk (a multiple of 4)")
    parser.add_argument("--windows", type=int, default=32, help="held-out windows scored")
    parser.add_argument("--samples", type=int, default=4, help="open-loop samples per window (stochastic models)")
    parser.add_argument("--rollouts", type=int, default=32, help="batch of the imagined rollouts timed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu",
                        help="where the models train and are scored: cpu, cuda or cuda:N (rollouts are timed on "
                             "the CPU too)")
    parser.add_argument("--warmup-updates", type=int, default=5,
                        help="updates left out of update_ms (they still train the model and count in train_s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--precision", default="float32", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device {args.device}: {error}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: choose cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU build" if not torch.version.cuda else "no usable GPU (scripts/torch-check.py says why)"
        parser.error(f"--device {args.device}: {why}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        parser.error(f"--device {args.device}: torch sees {torch.cuda.device_count()} GPU(s)")
    if args.warmup_updates < 0:
        parser.error("--warmup-updates must be >= 0")
    if device.type == "cuda":  # as the system's GPU processes run (common/device.py): TF32, cuDNN's fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = Data(args.data, args.episodes, args.seed)
    collect_s = time.perf_counter() - start
    # The chosen GPU as the current one: model_eval's rollout timing synchronizes the current device.
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        result = {name: measure(name, data, args) for name in args.models}
    ratios = {f"{name}_vs_ar_latent": round(result[name]["latent_steps_per_s"] / result["ar"]["latent_steps_per_s"], 2)
              for name in ("dssm", "sssm", "rssm", "sssm-j2", "sssm-j4") if name in result and "ar" in result}
    if "sssm" in result and "sssm-j4" in result:
        ratios["sssm-j4_vs_sssm_latent"] = round(result["sssm-j4"]["latent_steps_per_s"]
                                                 / result["sssm"]["latent_steps_per_s"], 2)
    result["ratios"] = ratios
    result["settings"] = {
        "data": args.data, "train_episodes": args.episodes if args.data != "synthetic" else None,
        "collect_s": round(collect_s, 1), "updates": args.updates, "batch": args.batch, "length": args.length,
        "sizes": args.sizes, "precision": args.precision, "context": CONTEXT, "horizon": HORIZON,
        "scored_steps": list(SCORED), "copy_last_frame_bits_per_dim": scored_bits(CopyLastFrame(), data, args, "cpu"),
        "windows": args.windows, "samples": args.samples, "rollout_batch": args.rollouts,
        "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "device": args.device, "warmup_updates": args.warmup_updates,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
