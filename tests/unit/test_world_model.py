"""Shapes, time alignment and determinism of the RSSM families and the world model."""

import pytest
import torch

from learner.rssm import FAMILIES, RSSM
from learner.state import State
from learner.world_model import WorldModel

T, B, A, E, D, Z = 6, 3, 2, 16, 12, 5


def make_rssm(family="rssm", seed=0):
    torch.manual_seed(seed)
    return RSSM(family, A, E, deter_size=D, stoch_size=Z, hidden_size=20, min_std=0.1)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, E, generator=g), torch.randn(T, B, A, generator=g)


def observe(rssm, embeds, actions, seed=1):
    return rssm.observe(embeds, actions, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_observe_and_imagine_shapes(family):
    rssm = make_rssm(family)
    embeds, actions = inputs()
    posterior, prior = observe(rssm, embeds, actions)
    deter = 0 if family == "stochastic" else D
    for state in (posterior, prior):
        assert state.deter.shape == (T, B, deter) and state.stoch.shape == (T, B, Z)
        assert state.mean.shape == state.std.shape == (T, B, Z)
        assert state.features.shape == (T, B, deter + Z) == (T, B, rssm.feature_size)
    imagined = rssm.imagine(actions[:4], posterior[-1])
    assert imagined.features.shape == (4, B, rssm.feature_size)
    assert (posterior.std > 0).all() and (prior.std > 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_time_alignment(family):
    """posterior[t] sees e_0..e_t and a_0..a_t only; prior[t] sees e_0..e_{t-1} and a_0..a_t."""
    rssm = make_rssm(family)
    embeds, actions = inputs()
    base_post, base_prior = observe(rssm, embeds, actions)
    k = 3
    later = embeds.clone()
    later[k] += 1.0
    post, prior = observe(rssm, later, actions)
    assert torch.equal(post.mean[:k], base_post.mean[:k]) and not torch.allclose(post.mean[k], base_post.mean[k])
    assert torch.equal(prior.mean[:k + 1], base_prior.mean[:k + 1]), "the prior at t must not see e_t"
    assert not torch.allclose(prior.mean[k + 1], base_prior.mean[k + 1])
    moved = actions.clone()
    moved[k] += 1.0
    post, prior = observe(rssm, embeds, moved)
    assert torch.equal(prior.mean[:k], base_prior.mean[:k]) and not torch.allclose(prior.mean[k], base_prior.mean[k])


@pytest.mark.parametrize("family", FAMILIES)
def test_observe_equals_step_by_step(family):
    rssm = make_rssm(family)
    embeds, actions = inputs()
    posterior, prior = observe(rssm, embeds, actions, seed=5)
    generator = torch.Generator().manual_seed(5)
    state = rssm.initial(B)
    for t in range(T):
        step_prior, state = rssm.step(state, actions[t], embeds[t], generator)
        torch.testing.assert_close(state.features, posterior[t].features)
        torch.testing.assert_close(step_prior.mean, prior[t].mean)


def test_imagine_timing_and_determinism():
    rssm = make_rssm()
    embeds, actions = inputs()
    posterior, _ = observe(rssm, embeds, actions)
    start = posterior[1]
    imagined = rssm.imagine(actions[2:5], start, torch.Generator().manual_seed(3))
    # imagined[0] is the prior reached from the state at t=1 under actions[2] (the a_tm1 of t=2)
    first, _ = rssm.step(start, actions[2], None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(imagined[0].features, first.features)
    again = rssm.imagine(actions[2:5], start, torch.Generator().manual_seed(3))
    assert torch.equal(again.features, imagined.features)
    other = rssm.imagine(actions[2:5], start, torch.Generator().manual_seed(4))
    assert not torch.equal(other.stoch, imagined.stoch)


def test_deterministic_family_has_no_noise():
    rssm = make_rssm("deterministic")
    embeds, actions = inputs()
    a, _ = observe(rssm, embeds, actions, seed=1)
    b, _ = observe(rssm, embeds, actions, seed=2)
    assert torch.equal(a.stoch, b.stoch) and torch.equal(a.stoch, a.mean) and (a.std == 1).all()


def test_same_seed_same_model():
    assert all(torch.equal(p, q) for p, q in zip(make_rssm(seed=3).parameters(), make_rssm(seed=3).parameters()))


def test_state_helpers():
    rssm = make_rssm()
    state = rssm.initial(2)
    state = State(state.deter + torch.arange(2.)[:, None], state.stoch, state.mean, state.std)
    repeated = state.repeat(3)
    assert repeated.deter.shape == (6, D) and torch.equal(repeated.deter[:, 0], torch.tensor([0., 0, 0, 1, 1, 1]))
    stacked = State.stack([state, state])
    assert stacked.flatten().deter.shape == (4, D)


def test_observe_rejects_mismatched_time():
    rssm = make_rssm()
    embeds, actions = inputs()
    with pytest.raises(ValueError, match="share"):
        rssm.observe(embeds, actions[:-1])


def test_world_model_open_loop_and_rewards():
    torch.manual_seed(0)
    model = WorldModel("rssm", A, deter_size=D, stoch_size=Z, hidden_size=20, cnn_depth=2)
    frames = torch.rand(4, B, 3, 64, 64) - 0.5
    context_actions, actions = torch.randn(4, B, A), torch.randn(5, B, A)
    recon, predicted = model.open_loop(frames, context_actions, actions)
    assert recon.shape == (4, B, 3, 64, 64) and predicted.shape == (5, B, 3, 64, 64)
    posterior, _ = model.observe(frames, context_actions)
    rewards = model.imagine_rewards(posterior[-1].repeat(7), torch.randn(12, B * 7, A))
    assert rewards.shape == (12, B * 7) and rewards.dtype == torch.float32
    belief = model.observe_step(model.rssm.initial(B), context_actions[0], frames[0])
    assert belief.features.shape == (B, model.rssm.feature_size)


def test_decoder_first_layer_fast_path_equals_its_deconvolution():
    from learner.networks import Decoder

    torch.manual_seed(0)
    decoder = Decoder(feature_size=10, depth=2)
    features = torch.randn(4, 10)
    x = decoder.project(features).reshape(4, -1, 1, 1)
    expected = decoder.net[1](decoder.net[0](x))  # deconvolution, then its ReLU
    torch.testing.assert_close(decoder._first_layer(x.reshape(4, -1)), expected)
    assert decoder(features).shape == (4, 3, 64, 64)


@pytest.mark.parametrize("discrete", [False, True])
def test_predict_episode_shapes_and_alignment(discrete):
    import numpy as np

    from common.episode import Episode, EpisodeInfo
    from learner.open_loop import predict_episode

    steps, size = 9, 4 if discrete else A
    rng = np.random.default_rng(0)
    actions = rng.integers(0, size, steps) if discrete else rng.uniform(-1, 1, (steps, size)).astype(np.float32)
    episode = Episode(rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8), actions,
                      np.zeros(steps, np.float32), np.zeros(steps, bool),
                      EpisodeInfo("r", 0, 0, "r-0", 0, "t", steps))
    torch.manual_seed(0)
    model = WorldModel("rssm", size, deter_size=D, stoch_size=Z, hidden_size=20, cnn_depth=2)
    truth, predicted = predict_episode(model, episode, context=3, horizon=20)
    assert truth.shape == predicted.shape == (steps + 1 - 3, 64, 64, 3)  # capped by the episode's end
    assert np.array_equal(truth, episode.observations[3:]) and predicted.dtype == np.uint8
    with pytest.raises(ValueError, match="context"):
        predict_episode(model, episode, context=0)
