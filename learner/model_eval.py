"""How good and how fast a world model is, the two axes of Buesing et al.'s comparison, for every family.

- :func:`prediction_nll`: the per-frame negative log-likelihood, in bits per pixel dimension, of the
  frames a model predicts open loop after C observed ones, at each step of a prediction horizon.
- :func:`rollout_speed`: agent steps covered per second by the latent rollout planning uses
  (:meth:`imagine_rewards`) and decoded frames per second (:meth:`imagine_frames`).
- :func:`evaluate_model`: both on held-out episodes, the report of ``orrery evaluate-model``.

The likelihood. Models are trained with a unit-variance Gaussian over preprocessed pixels, whose
density says little about the frames (it is almost flat over [-0.5, 0.5)). The evaluation scores
the frames as they are stored to the model: each value one of 2^b levels (b = ``env.bit_depth``),
under a discretised Gaussian around the predicted mean whose std sigma is the best of a grid
(2^-7 .. 1, half octaves) for that prediction step on the evaluated windows -- one number per step
fitted, against thousands of pixels scored. A uniform guess scores b bits per dimension.
For a stochastic model the frame's probability is the average over ``samples`` open-loop samples
(log-mean-exp, a lower bound on the log-likelihood that tightens with more samples).

A jumpy model (j agent steps per transition) predicts only the frame at the end of each jump: it is
scored at steps j, 2j, .. of the horizon, which :func:`prediction_nll` reports with the steps.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Sequence

import numpy as np
import torch

from common.envs.preprocess import preprocess_observation
from common.episode import Episode
from learner.jumpy import pack_actions

SIGMAS = tuple(2.0 ** (k / 2) for k in range(-14, 1))
"""The std grid of the discretised Gaussian: 2^-7 .. 1 in half octaves (preprocessed units)."""


def episode_windows(episodes: Sequence[Episode], length: int, count: int, action_size: int, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` windows of ``length`` consecutive frames, uniform over every start in every episode.

    Returns frames (W, L, 64, 64, 3) uint8, their a_tm1 (W, L, A) float32 and r_tm1 (W, L) float32,
    the replay batch layout: row i of a window starting at s is o_{s+i}, the action before it
    a_{s+i-1} and the reward that came with it r_{s+i-1} (zero for o_0); actions one-hot when the
    episodes' actions are discrete.
    """
    starts = [(e, s) for e, episode in enumerate(episodes) for s in range(episode.length + 2 - length)]
    if not starts:
        raise ValueError(f"no episode has {length} frames (context + horizon); the longest has "
                         f"{max(e.length + 1 for e in episodes)}")
    rng = np.random.default_rng(seed)
    picks = [starts[i] for i in rng.choice(len(starts), size=count, replace=len(starts) < count)]
    frames = np.stack([episodes[e].observations[s:s + length] for e, s in picks])
    actions, rewards = [], []
    for e, s in picks:
        episode = episodes[e]
        taken = episode.actions.astype(np.int64) if episode.discrete else episode.actions.astype(np.float32)
        if episode.discrete:
            taken = np.eye(action_size, dtype=np.float32)[taken]  # (T,) -> (T, n)
        a_tm1 = np.concatenate([np.zeros_like(taken[:1]), taken])  # (T+1, A): a_{-1} = 0, a_0 .. a_{T-1}
        actions.append(a_tm1[s:s + length])
        rewards.append(np.concatenate([[0.0], episode.rewards])[s:s + length])
    return frames, np.stack(actions).astype(np.float32), np.stack(rewards).astype(np.float32)


def discretised_log_prob(levels: torch.Tensor, mean: torch.Tensor, sigma: float, bins: int) -> torch.Tensor:
    """log P(level) per element under N(mean, sigma^2) cut into ``bins`` levels of [-0.5, 0.5), the ends open.

    Level k covers [k / bins - 0.5, (k + 1) / bins - 0.5); level 0 reaches down to -inf and the
    last up to +inf, so the probabilities of all levels sum to 1.
    """
    lower = torch.where(levels > 0, levels / bins - 0.5, -math.inf)
    upper = torch.where(levels < bins - 1, (levels + 1) / bins - 0.5, math.inf)
    a, b = (lower - mean) / sigma, (upper - mean) / sigma
    # Evaluate in the lower tail, where Phi is accurate: Phi(b) - Phi(a) = Phi(-a) - Phi(-b).
    flip = a + b > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b))


@torch.no_grad()
def prediction_nll(model, frames: np.ndarray, a_tm1: np.ndarray, *, context: int, bit_depth: int = 5,
                   samples: int = 4, generator: torch.Generator | None = None) -> dict:
    """Bits per dimension of each frame predicted after ``context`` observed ones, per horizon step.

    frames (W, C+P, 64, 64, 3) uint8 and a_tm1 (W, C+P, A) as :func:`episode_windows` gives them.
    Returns {"steps": agent steps k after the context (1..P, every j-th for a jumpy model),
    "bits_per_dim": one per step, "sigma": the std chosen per step, "mean_bits_per_dim"}.
    """
    device = next(model.parameters()).device
    windows, length = frames.shape[:2]
    predict = length - context
    if predict < model.jump:
        raise ValueError(f"a horizon of {predict} steps holds no whole jump of {model.jump}")
    u8 = torch.as_tensor(frames, device=device).permute(1, 0, 4, 2, 3)  # (W, L, H, W, 3) -> (L, W, 3, H, W)
    bins = 2 ** bit_depth
    observed = preprocess_observation(u8, bit_depth, noise=False) + 0.5 / bins  # the centres of the levels
    actions = torch.as_tensor(a_tm1, device=device).transpose(0, 1)  # (W, L, A) -> (L, W, A)
    repeat = lambda x: x.repeat_interleave(samples, dim=1)  # noqa: E731  (L, W, .) -> (L, W*S, .)
    model.eval()
    _, predicted = model.open_loop(repeat(observed[:context]), repeat(actions[:context]),
                                   repeat(actions[context:]), generator)
    steps = [k for k in range(1, predict + 1) if k % model.jump == 0]
    levels = (torch.floor((observed[context:] + 0.5) * bins)).clamp(0, bins - 1)  # (P, W, 3, H, W)
    dims = 3 * 64 * 64
    bits, sigmas = [], []
    for k in steps:
        mean = predicted[k - 1].float().reshape(windows, samples, dims)  # (W*S, 3, H, W) -> (W, S, D)
        target = levels[k - 1].reshape(windows, 1, dims)
        best = max((_mean_log_likelihood(target, mean, sigma, bins), sigma) for sigma in SIGMAS)
        bits.append(-best[0] / (dims * math.log(2)))
        sigmas.append(best[1])
    return {"steps": steps, "bits_per_dim": bits, "sigma": sigmas, "mean_bits_per_dim": float(np.mean(bits))}


def _mean_log_likelihood(target: torch.Tensor, mean: torch.Tensor, sigma: float, bins: int) -> float:
    """Mean over windows of log (1/S sum_s P(frame | sample s)): target (W, 1, D) levels, mean (W, S, D)."""
    per_sample = discretised_log_prob(target, mean, sigma, bins).sum(-1)  # (W, S)
    return float((torch.logsumexp(per_sample, 1) - math.log(mean.shape[1])).mean())


@torch.no_grad()
def rollout_speed(model, batch: int, horizon: int, *, repeats: int = 5) -> dict[str, float]:
    """Imagined rollouts of ``horizon`` agent steps from ``batch`` states: {"latent_steps_per_s", "frames_per_s"}.

    latent_steps_per_s: agent steps covered per second by :meth:`imagine_rewards` (B * H per call);
    frames_per_s: frames decoded per second by :meth:`imagine_frames` (B * H / j per call). Median
    of ``repeats`` calls after one warm-up; random actions (the cost does not depend on them).
    """
    device = next(model.parameters()).device
    if horizon % model.jump:
        raise ValueError(f"horizon {horizon} must be a multiple of the model's jump {model.jump}")
    model.eval()
    state = model.rssm.initial(batch, device)
    actions = pack_actions(torch.rand(horizon, batch, model.action_size, device=device) * 2 - 1, model.jump)
    latent = _median_seconds(lambda: model.imagine_rewards(state, actions), repeats, device)
    decoded = _median_seconds(lambda: model.imagine_frames(state, actions), repeats, device)
    return {"latent_steps_per_s": batch * horizon / latent, "frames_per_s": batch * (horizon // model.jump) / decoded}


def _median_seconds(call, repeats: int, device: torch.device) -> float:
    call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate_model(model, episodes: Sequence[Episode], *, context: int = 5, horizon: int = 12, windows: int = 32,
                   samples: int = 4, bit_depth: int = 5, batches: Sequence[int] = (1, 32), seed: int = 0) -> dict:
    """Likelihood on windows of held-out ``episodes`` and rollout speed at each batch size: one JSON-able dict."""
    frames, a_tm1, _ = episode_windows(episodes, context + horizon, windows, model.action_size, seed)
    nll = prediction_nll(model, frames, a_tm1, context=context, bit_depth=bit_depth, samples=samples,
                         generator=torch.Generator(next(model.parameters()).device).manual_seed(seed))
    speed = {str(batch): rollout_speed(model, batch, horizon - horizon % model.jump) for batch in batches}
    return {"jump": model.jump, "context": context, "horizon": horizon, "windows": windows, "samples": samples,
            "bit_depth": bit_depth, "nll": nll, "speed": speed}


def describe(result: dict) -> str:
    """The evaluation as a few lines of text: bits per dimension by step, then speeds by batch size."""
    nll = result["nll"]
    lines = [f"negative log-likelihood, bits per pixel dimension ({result['windows']} windows, "
             f"{result['context']} context frames, {result['samples']} samples; uniform = {result['bit_depth']}):",
             "  step  " + " ".join(f"{k:>6d}" for k in nll["steps"]),
             "  bits  " + " ".join(f"{b:6.3f}" for b in nll["bits_per_dim"])
             + f"   mean {nll['mean_bits_per_dim']:.3f}",
             f"imagined rollouts of {result['horizon'] - result['horizon'] % result['jump']} agent steps "
             f"(jump {result['jump']}):"]
    for batch, speed in result["speed"].items():
        lines.append(f"  batch {batch:>3}: {speed['latent_steps_per_s']:10.1f} agent steps/s latent, "
                     f"{speed['frames_per_s']:9.1f} frames/s decoded")
    return "\n".join(lines)
