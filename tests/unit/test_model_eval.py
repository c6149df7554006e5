"""The model evaluation: discretised likelihood, windows of episodes, per-step bits, rollout speed."""

import math

import numpy as np
import pytest
import torch

from common.episode import Episode, EpisodeInfo
from learner.model_eval import (describe, discretised_log_prob, episode_windows, evaluate_model, prediction_nll,
                                rollout_speed)
from learner.world_model import WorldModel

BINS = 32


def test_discretised_probabilities_sum_to_one_and_match_the_normal_cdf():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(50, generator=g) * 1.6 - 0.8  # some beyond the range of the levels
    levels = torch.arange(BINS, dtype=torch.float32)[:, None]
    for sigma in (2 ** -7, 0.05, 1.0):
        probs = discretised_log_prob(levels, mean[None], sigma, BINS).double().exp()
        torch.testing.assert_close(probs.sum(0), torch.ones(50, dtype=torch.float64), atol=1e-4, rtol=0)
    normal = torch.distributions.Normal(mean.double(), 0.05)
    for k in (3, 17):
        expected = normal.cdf(torch.tensor((k + 1) / BINS - 0.5)) - normal.cdf(torch.tensor(k / BINS - 0.5))
        got = discretised_log_prob(torch.full((50,), float(k)), mean, 0.05, BINS).double().exp()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-3)
    far = discretised_log_prob(torch.tensor([0.0, 31.0]), torch.tensor([0.5, -0.5]), 2 ** -7, BINS)
    assert bool(torch.isfinite(far).all()) and bool((far < -1000).all()), "far tails stay finite"


def episode(steps=12, discrete=False, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, steps) if discrete else rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
    return Episode(rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8), actions,
                   rng.normal(size=steps).astype(np.float32), np.zeros(steps, bool),
                   EpisodeInfo("r", 0, 0, f"r-{seed}", 0, "t", steps))


@pytest.mark.parametrize("discrete", [False, True])
def test_windows_align_frames_with_the_action_before_them(discrete):
    episodes = [episode(discrete=discrete, seed=s) for s in range(2)]
    frames, a_tm1, r_tm1 = episode_windows(episodes, 5, 20, 3 if discrete else 2, seed=1)
    assert frames.shape == (20, 5, 64, 64, 3) and a_tm1.shape == (20, 5, 3 if discrete else 2)
    assert r_tm1.shape == (20, 5)
    for w in range(20):
        e, s = next((e, s) for e in range(2) for s in range(9)
                    if np.array_equal(frames[w], episodes[e].observations[s:s + 5]))
        taken = episodes[e].actions
        expected = np.eye(3)[taken] if discrete else taken
        for i in range(5):
            assert np.array_equal(a_tm1[w, i], expected[s + i - 1] if s + i > 0 else np.zeros_like(expected[0]))
            assert r_tm1[w, i] == (episodes[e].rewards[s + i - 1] if s + i > 0 else 0.0)
    with pytest.raises(ValueError, match="no episode has 20 frames"):
        episode_windows(episodes, 20, 1, 2)


class CopyLastFrame(torch.nn.Module):
    """Predicts every future frame as the last context frame: known likelihoods on known videos."""

    def __init__(self, jump=1):
        super().__init__()
        self.jump, self.action_size = jump, 2
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def open_loop(self, context, context_actions, actions, generator=None):
        return context, context[-1:].expand(actions.shape[0], *context.shape[1:])


def test_bits_per_dimension_of_perfect_and_of_hopeless_predictions():
    rng = np.random.default_rng(0)
    inner_levels = rng.integers(8, 248, (8, 1, 64, 64, 3), dtype=np.uint8)  # levels 1..30: no open-ended end level
    still = np.repeat(inner_levels, 6, axis=1)  # (W, L, ...): a static video
    result = prediction_nll(CopyLastFrame(), still, np.zeros((8, 6, 2), np.float32), context=2, samples=1)
    assert result["steps"] == [1, 2, 3, 4]
    # Predicted at the level's centre with sigma a quarter level: P = Phi(2) - Phi(-2).
    expected = -math.log2(math.erf(2 / math.sqrt(2)))
    assert result["bits_per_dim"] == pytest.approx([expected] * 4, rel=1e-3) and result["sigma"] == [2 ** -7] * 4
    noise = rng.integers(0, 256, (8, 6, 64, 64, 3), dtype=np.uint8)
    result = prediction_nll(CopyLastFrame(), noise, np.zeros((8, 6, 2), np.float32), context=2, samples=2)
    # A Gaussian around an unrelated frame does worse than a uniform guess over the 32 levels (5 bits).
    assert 5.0 < result["mean_bits_per_dim"] < 6.0


def test_a_jumpy_model_is_scored_at_the_end_of_each_jump():
    frames = np.zeros((2, 9, 64, 64, 3), np.uint8)
    result = prediction_nll(CopyLastFrame(jump=3), frames, np.zeros((2, 9, 2), np.float32), context=2, samples=1)
    assert result["steps"] == [3, 6]


@pytest.mark.parametrize("jump", [1, 2])
def test_rollout_speed_and_evaluation_report(jump):
    from common.config import load_config

    torch.manual_seed(0)
    cfg = load_config("debug", ["model.cnn_depth=2", "model.family=sssm", f"model.jump={jump}"])
    model = WorldModel.from_config(cfg, 2)
    speed = rollout_speed(model, 3, 4, repeats=1)
    assert set(speed) == {"latent_steps_per_s", "frames_per_s"} and all(v > 0 for v in speed.values())
    result = evaluate_model(model, [episode(steps=12)], context=3, horizon=4, windows=4, samples=2, batches=(1, 2))
    assert result["nll"]["steps"] == [1, 2, 3, 4][jump - 1::jump] and set(result["speed"]) == {"1", "2"}
    text = describe(result)
    assert "bits" in text and "batch   2" in text
