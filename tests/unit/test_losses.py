"""KL, free nats and latent overshooting against closed forms and naive loops built from the shipped code."""

import math

import pytest
import torch

from common.config import LossConfig
from learner.losses import (decoded_image_nll, free_nats_kl, gaussian_kl, image_nll, loss_scales, overshooting_kl,
                            reward_nll, world_model_loss)
from learner.rssm import RSSM
from learner.state import State
from learner.world_model import WorldModel

T, B, A, E = 7, 3, 2, 16


def test_gaussian_kl_closed_form():
    # KL(N(1, 2^2) || N(0, 1)) = 0.5 * (4 + 1 - 1 - ln 4) per dimension
    kl = gaussian_kl(torch.ones(3), torch.full((3,), 2.0), torch.zeros(3), torch.ones(3))
    assert float(kl) == pytest.approx(3 * 0.5 * (4 - math.log(4)))
    # identical Gaussians: 0
    assert float(gaussian_kl(torch.ones(4), torch.ones(4), torch.ones(4), torch.ones(4))) == 0.0


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    qm, pm = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    qs, ps = torch.rand(5, 4, generator=g) + 0.1, torch.rand(5, 4, generator=g) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(qm, qs),
                                                 torch.distributions.Normal(pm, ps)).sum(-1)
    torch.testing.assert_close(gaussian_kl(qm, qs, pm, ps), expected)


def state(mean, std):
    return State(torch.zeros(*mean.shape[:-1], 0), mean, mean, std)


def test_free_nats_clamps_small_kl_without_gradient():
    mean = torch.full((2, 3, 4), 0.1, requires_grad=True)
    prior = state(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    value, raw = free_nats_kl(state(mean, torch.ones(2, 3, 4)), prior, free_nats=3.0)
    assert float(value.detach()) == 3.0 and float(raw.detach()) == pytest.approx(0.5 * 4 * 0.01)
    value.backward()
    assert torch.count_nonzero(mean.grad) == 0
    far = state(torch.full((2, 3, 4), 2.0), torch.ones(2, 3, 4))
    value, raw = free_nats_kl(far, prior, free_nats=3.0)
    assert float(value) == float(raw) == pytest.approx(0.5 * 4 * 4.0)


def test_likelihood_terms():
    assert float(image_nll(torch.zeros(2, 1, 3, 64, 64), torch.ones(2, 1, 3, 64, 64))) == 0.5 * 3 * 64 * 64
    assert float(reward_nll(torch.zeros(4), torch.full((4,), 2.0))) == 2.0


def rollout(family, seed=0):
    torch.manual_seed(seed)
    rssm = RSSM(family, A, E, deter_size=10, stoch_size=4, hidden_size=16)
    g = torch.Generator().manual_seed(seed)
    embeds, actions = torch.randn(T, B, E, generator=g), torch.randn(T, B, A, generator=g)
    initial = rssm.initial(B)
    posterior, prior = rssm.observe(embeds, actions, initial, torch.Generator().manual_seed(1))
    return rssm, initial, posterior, prior, actions


@pytest.mark.parametrize("family", ["rssm", "stochastic", "deterministic"])
@pytest.mark.parametrize("free_nats", [0.0, 1.0])
def test_overshooting_with_distance_one_equals_the_standard_kl(family, free_nats):
    rssm, initial, posterior, prior, actions = rollout(family)
    standard, _ = free_nats_kl(posterior, prior, free_nats)
    overshoot, _ = overshooting_kl(rssm, posterior, initial, actions, 1, beta=5.0, free_nats=free_nats)
    torch.testing.assert_close(overshoot, standard)
    grads = torch.autograd.grad(standard, list(rssm.parameters()), allow_unused=True, retain_graph=True)
    over = torch.autograd.grad(overshoot, list(rssm.parameters()), allow_unused=True)
    for g1, g2 in zip(grads, over):
        if g1 is not None:
            torch.testing.assert_close(g1, g2)


def naive_overshooting(rssm, posterior, initial, actions, distance, beta, free_nats):
    """One start point and one distance at a time, from rssm.step and gaussian_kl."""
    steps = actions.shape[0]
    per_distance = {d: [] for d in range(1, distance + 1)}
    for i in range(steps):  # start i is the state at time i - 1
        current = initial if i == 0 else posterior[i - 1]
        for d in range(1, distance + 1):
            target_time = i - 1 + d
            if target_time >= steps:
                break
            current, _ = rssm.step(current, actions[target_time])
            target = posterior[target_time]
            kl = gaussian_kl(target.mean, target.std, current.mean, current.std)  # (B,)
            per_distance[d].append(torch.clamp(kl, min=free_nats))
    total = sum((1.0 if d == 1 else beta) * torch.cat(v).mean() for d, v in per_distance.items())
    return total / distance


@pytest.mark.parametrize("distance", [2, 4, T])
@pytest.mark.parametrize("free_nats", [0.0, 0.5])
def test_batched_overshooting_equals_naive_loop(distance, free_nats):
    # The deterministic family draws no noise, so both orders of computation see identical states.
    rssm, initial, posterior, _, actions = rollout("deterministic")
    batched, metrics = overshooting_kl(rssm, posterior, initial, actions, distance, beta=0.7, free_nats=free_nats)
    naive = naive_overshooting(rssm, posterior, initial, actions, distance, beta=0.7, free_nats=free_nats)
    torch.testing.assert_close(batched, naive)
    assert set(metrics) == {f"learner/overshooting_kl_d{d}" for d in range(1, distance + 1)}


def test_overshooting_targets_beyond_one_step_carry_no_gradient():
    rssm, initial, posterior, _, actions = rollout("rssm")
    leaf = posterior.map(lambda x: x.detach().requires_grad_(True))
    one, _ = overshooting_kl(rssm, leaf, initial, actions, 1, beta=1.0, free_nats=0.0)
    two, _ = overshooting_kl(rssm, leaf, initial, actions, 2, beta=1.0, free_nats=0.0)
    g_one = torch.autograd.grad(one, leaf.mean)[0]
    g_two = torch.autograd.grad(two, leaf.mean)[0]
    # the d=2 term adds gradient only through the rolled prior (starts), never through its target
    # at the last time step, which is a target only: its gradient is the d=1 part, halved by 1/D.
    torch.testing.assert_close(g_two[-1], g_one[-1] / 2)


def test_overshooting_rejects_bad_distance():
    rssm, initial, posterior, _, actions = rollout("rssm")
    with pytest.raises(ValueError, match="distance"):
        overshooting_kl(rssm, posterior, initial, actions, T + 1, beta=1.0, free_nats=0.0)


@pytest.mark.parametrize("distance", [0, 3])
def test_world_model_loss_terms_match_scales(distance):
    torch.manual_seed(0)
    model = WorldModel("rssm", A, deter_size=10, stoch_size=4, hidden_size=16, cnn_depth=2)
    cfg = LossConfig(overshooting_distance=distance, global_kl_scale=0.1)
    frames = torch.rand(5, 2, 3, 64, 64) - 0.5
    total, terms, metrics = world_model_loss(model, frames, torch.randn(5, 2, A), torch.randn(5, 2), cfg)
    assert set(terms) == set(loss_scales(cfg)) == {"image", "reward", "kl", "global_kl"}
    expected = sum(loss_scales(cfg)[k] * v for k, v in terms.items())
    torch.testing.assert_close(total, expected)
    assert ("learner/overshooting_kl_d3" in metrics) == (distance == 3)
    assert float(terms["kl"].detach()) >= cfg.free_nats


def decoded_frames_of(model):
    """Counts the frames the decoder is asked for, through a forward hook."""
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    return seen


def test_image_fraction_decodes_that_share_of_frames_and_estimates_the_full_mean_unbiased():
    torch.manual_seed(0)
    model = WorldModel("rssm", A, deter_size=10, stoch_size=4, hidden_size=16, cnn_depth=2)
    frames, actions = torch.rand(6, 4, 3, 64, 64) - 0.5, torch.randn(6, 4, A)
    with torch.no_grad():
        posterior, _ = model.observe(frames, actions, generator=torch.Generator().manual_seed(1))
        full = image_nll(model.decode(posterior), frames)
        torch.testing.assert_close(decoded_image_nll(model, posterior, frames, 1.0), full)
        seen = decoded_frames_of(model)
        generator = torch.Generator().manual_seed(2)
        draws = torch.stack([decoded_image_nll(model, posterior, frames, 0.25, generator) for _ in range(400)])
    assert set(seen) == {6}  # 0.25 of the 24 frames, each time
    assert draws.std() > 0  # a fresh subset each call
    standard_error = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - full) < 4 * standard_error  # unbiased: the subsets average to the full mean
    # A per-frame loss that is the same for every frame has the same value on any subset.
    torch.testing.assert_close(decoded_image_nll(model, posterior, model.decode(posterior), 0.25), torch.tensor(0.0))


def test_image_fraction_in_the_world_model_loss_decodes_fewer_frames_and_still_trains_the_decoder():
    torch.manual_seed(0)
    model = WorldModel("rssm", A, deter_size=10, stoch_size=4, hidden_size=16, cnn_depth=8)
    seen = decoded_frames_of(model)
    frames = torch.rand(5, 2, 3, 64, 64) - 0.5
    total, terms, _ = world_model_loss(model, frames, torch.randn(5, 2, A), torch.randn(5, 2),
                                       LossConfig(image_fraction=0.5), torch.Generator().manual_seed(3))
    assert seen == [5]
    total.backward()
    assert model.decoder.net[-1].weight.grad.abs().sum() > 0 and model.decoder.project.weight.grad.abs().sum() > 0
