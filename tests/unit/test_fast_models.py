"""Buesing et al.'s families: spatial SSMs, pool-and-inject, the autoregressive baseline and jumpy models.

Shapes and time alignment of every family, fast paths against naive loops built from the shipped
step functions, jumpy packing against an explicit grouping, and the jumpy actor's filter against
the packed chunk the learner trains on.
"""

import numpy as np
import pytest
import torch

from common.config import ConfigError, load_config
from learner.autoregressive import AutoregressiveModel
from learner.jumpy import JumpyModel, pack_actions, pack_jumps
from learner.learner import Learner
from learner.losses import image_nll, reward_nll
from learner.objectives import CONTEXT, model_loss, open_loop_loss
from learner.spatial import PoolAndInject, S, transition_net
from learner.ssm import FAMILIES, ConvSSM
from learner.world_model import WorldModel
from tests.synthetic import moving_square

T, B, A, E_C, C_S, C_Z = 6, 3, 2, 4, 5, 3
SMALL = dict(hidden_size=16, cnn_depth=2, state_channels=C_S, latent_channels=C_Z)


def make_ssm(family, seed=0):
    torch.manual_seed(seed)
    return ConvSSM(family, A, E_C, state_channels=C_S, latent_channels=C_Z)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, E_C * S * S, generator=g), torch.randn(T, B, A, generator=g)


def frames(steps=T, batch=B, seed=0):
    return torch.rand(steps, batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) - 0.5


def observe(ssm, embeds, actions, seed=1):
    return ssm.observe(embeds, actions, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- pool-and-inject

def test_pool_and_inject_shape_and_values():
    x = torch.randn(2, 4, S, S)
    y = PoolAndInject()(x)
    assert y.shape == (2, 8, S, S)
    assert torch.equal(y[:, :4], x) and torch.equal(y[:, 4:, 3, 5], x.amax((2, 3)))


def test_pool_and_inject_carries_a_corner_to_the_opposite_corner_in_one_layer():
    x = torch.zeros(1, 2, S, S)
    changed = x.clone()
    changed[0, 1, 0, 0] = 5.0
    layer = PoolAndInject()
    assert not torch.equal(layer(changed)[..., S - 1, S - 1], layer(x)[..., S - 1, S - 1])
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)  # a plain conv moves information one cell per layer
    assert torch.equal(conv(changed)[..., S - 1, S - 1], conv(x)[..., S - 1, S - 1])
    net = transition_net(2, 4, 3)  # so the whole transition stack sees the whole map
    assert not torch.allclose(net(changed)[..., S - 1, S - 1], net(x)[..., S - 1, S - 1])


# ---------------------------------------------------------------- dssm and sssm dynamics

@pytest.mark.parametrize("family", FAMILIES)
def test_ssm_observe_and_imagine_shapes(family):
    ssm = make_ssm(family)
    embeds, actions = inputs()
    posterior, prior = observe(ssm, embeds, actions)
    for state in (posterior, prior):
        assert state.deter.shape == (T, B, C_S * S * S) and state.stoch.shape == (T, B, C_Z * S * S)
        assert state.features.shape == (T, B, ssm.feature_size) and (state.std > 0).all()
    assert bool((posterior.deter.abs() <= 1).all()), "the gated update keeps s_t in [-1, 1]"
    assert ssm.imagine(actions[:4], posterior[-1]).features.shape == (4, B, ssm.feature_size)
    assert ssm.imagine_features(actions[:4], posterior[-1]).shape == (4, B, ssm.feature_size)


@pytest.mark.parametrize("family", FAMILIES)
def test_ssm_time_alignment(family):
    """posterior[t] sees e_0..e_t and a_0..a_t; prior[t] sees e_0..e_{t-1} and a_0..a_t."""
    ssm = make_ssm(family)
    embeds, actions = inputs()
    base_post, base_prior = observe(ssm, embeds, actions)
    k = 3
    later = embeds.clone()
    later[k] += 1.0
    post, prior = observe(ssm, later, actions)
    assert torch.equal(post.mean[:k], base_post.mean[:k]) and not torch.allclose(post.mean[k], base_post.mean[k])
    assert torch.equal(prior.mean[:k + 1], base_prior.mean[:k + 1]), "the prior at t must not see e_t"
    assert not torch.allclose(prior.mean[k + 1], base_prior.mean[k + 1])
    moved = actions.clone()
    moved[k] += 1.0
    post, prior = observe(ssm, embeds, moved)
    assert torch.equal(prior.mean[:k], base_prior.mean[:k]) and not torch.allclose(prior.mean[k], base_prior.mean[k])


@pytest.mark.parametrize("family", FAMILIES)
def test_ssm_observe_equals_step_by_step(family):
    ssm = make_ssm(family)
    embeds, actions = inputs()
    posterior, prior = observe(ssm, embeds, actions, seed=5)
    generator = torch.Generator().manual_seed(5)
    state = ssm.initial(B)
    for t in range(T):
        step_prior, state = ssm.step(state, actions[t], embeds[t], generator)
        torch.testing.assert_close(state.features, posterior[t].features)
        torch.testing.assert_close(step_prior.mean, prior[t].mean)


def test_dssm_has_no_noise_and_sssm_has():
    embeds, actions = inputs()
    a, _ = observe(make_ssm("dssm"), embeds, actions, seed=1)
    b, _ = observe(make_ssm("dssm"), embeds, actions, seed=2)
    assert torch.equal(a.features, b.features) and torch.equal(a.stoch, a.mean) and (a.std == 1).all()
    c, _ = observe(make_ssm("sssm"), embeds, actions, seed=1)
    d, _ = observe(make_ssm("sssm"), embeds, actions, seed=2)
    assert not torch.equal(c.stoch, d.stoch)


@pytest.mark.parametrize("family", FAMILIES)
def test_spatial_world_model_interface(family):
    torch.manual_seed(0)
    model = WorldModel(family, A, **SMALL)
    context, context_actions, actions = frames(4), torch.randn(4, B, A), torch.randn(5, B, A)
    recon, predicted = model.open_loop(context, context_actions, actions)
    assert recon.shape == (4, B, 3, 64, 64) and predicted.shape == (5, B, 3, 64, 64)
    belief = model.observe_step(model.rssm.initial(B), context_actions[0], context[0])
    rewards = model.imagine_rewards(belief.repeat(7), torch.randn(12, B * 7, A))
    assert rewards.shape == (12, B * 7) and rewards.dtype == torch.float32
    assert model.imagine_frames(belief, actions).shape == (5, B, 3, 64, 64)


# ---------------------------------------------------------------- ar

def make_ar(seed=0, actions=A):
    torch.manual_seed(seed)
    return AutoregressiveModel(actions, **SMALL)


def test_ar_teacher_forcing_equals_stepping_from_true_frames():
    model = make_ar()
    observed, actions = frames(), torch.randn(T, B, A)
    predicted, rewards = model.teacher_forced(observed, actions)
    assert predicted.shape == (T, B, 3, 64, 64) and rewards.shape == (T, B)
    history = model.rssm.initial(B)
    for t in range(T):
        _, frame, reward = model.step(history, actions[t])
        torch.testing.assert_close(frame, predicted[t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(reward, rewards[t], atol=1e-5, rtol=1e-4)
        history = model.observe_step(history, actions[t], observed[t])


def test_ar_time_alignment():
    """prediction[t] of o_t sees o_{t-1}, o_{t-2} and a[t], and nothing of o_t or later."""
    model = make_ar()
    observed, actions = frames(), torch.randn(T, B, A)
    base, _ = model.teacher_forced(observed, actions)
    k = 3
    changed = observed.clone()
    changed[k] = -changed[k]
    predicted, _ = model.teacher_forced(changed, actions)
    assert torch.equal(predicted[:k + 1], base[:k + 1])
    assert not torch.allclose(predicted[k + 1], base[k + 1]) and not torch.allclose(predicted[k + 2], base[k + 2])
    assert torch.equal(predicted[k + 3:], base[k + 3:]), "two frames of history, no more"
    moved = actions.clone()
    moved[k] += 1.0
    predicted, _ = model.teacher_forced(observed, moved)
    assert torch.equal(predicted[:k], base[:k]) and not torch.allclose(predicted[k], base[k])


def test_ar_interface_and_rollouts():
    model = make_ar()
    context, context_actions, actions = frames(3), torch.randn(3, B, A), torch.randn(4, B, A)
    recon, predicted = model.open_loop(context, context_actions, actions)
    assert torch.equal(recon, context) and predicted.shape == (4, B, 3, 64, 64)
    belief = model.rssm.initial(B)
    for t in range(3):
        belief = model.observe_step(belief, context_actions[t], context[t])
    torch.testing.assert_close(model.imagine_frames(belief, actions), predicted)
    assert model.imagine_rewards(belief.repeat(2), torch.randn(4, 2 * B, A)).shape == (4, 2 * B)


# ---------------------------------------------------------------- jumpy

@pytest.mark.parametrize("jump", [1, 2, 3])
def test_pack_jumps_equals_explicit_grouping(jump):
    steps = 6
    g = torch.Generator().manual_seed(0)
    observed, actions, rewards = torch.randn(steps, B, 3, 4, 4, generator=g), torch.randn(steps, B, A, generator=g), \
        torch.randn(steps, B, generator=g)
    packed_frames, packed_actions, packed_rewards = pack_jumps(observed, actions, rewards, jump)
    assert packed_actions.shape == (steps // jump, B, jump * A)
    for u in range(steps // jump):
        group = range(u * jump, (u + 1) * jump)
        assert torch.equal(packed_frames[u], observed[group[-1]])
        assert torch.equal(packed_actions[u], torch.cat([actions[t] for t in group], -1))
        torch.testing.assert_close(packed_rewards[u], sum(rewards[t] for t in group))
    assert torch.equal(pack_actions(actions, jump), packed_actions)


def test_pack_rejects_partial_jumps():
    with pytest.raises(ValueError, match="divisible"):
        pack_jumps(torch.zeros(5, 1, 3), torch.zeros(5, 1, A), torch.zeros(5, 1), 2)
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_actions(torch.zeros(6, 1, A), 4)


@pytest.mark.parametrize("jump", [1, 2, 3])
@pytest.mark.parametrize("inner", ["dssm", "deterministic", "ar"])
def test_jumpy_actor_filter_equals_the_packed_chunk(inner, jump):
    """Filtering every agent step (actors) gives at t = uj + j-1 the belief observe gives on packed chunks."""
    steps = 6
    torch.manual_seed(0)
    base = make_ar(actions=jump * A) if inner == "ar" else WorldModel(inner, jump * A, deter_size=12, stoch_size=5,
                                                                      **SMALL)
    model = JumpyModel(base, jump, A)
    observed, actions = frames(steps), torch.randn(steps, B, A)
    belief = model.rssm.initial(B)
    filtered = []
    for t in range(steps):
        belief = model.observe_step(belief, actions[t], observed[t])
        filtered.append(model.rssm.newest(belief))
        assert belief.deter.shape == model.rssm.initial(B).deter.shape
    packed_frames, packed_actions, _ = pack_jumps(observed, actions, torch.zeros(steps, B), jump)
    state = base.rssm.initial(B)
    for u in range(steps // jump):
        state = base.observe_step(state, packed_actions[u], packed_frames[u])
        torch.testing.assert_close(filtered[u * jump + jump - 1].deter, state.deter)
        torch.testing.assert_close(filtered[u * jump + jump - 1].stoch, state.stoch)


def test_jumpy_open_loop_predicts_one_frame_per_jump():
    torch.manual_seed(0)
    model = JumpyModel(WorldModel("sssm", 2 * A, **SMALL), 2, A)
    recon, predicted = model.open_loop(frames(3), torch.randn(3, B, A), torch.randn(5, B, A))
    assert recon.shape == (3, B, 3, 64, 64) and predicted.shape == (5, B, 3, 64, 64)
    assert torch.equal(predicted[0], predicted[1]) and torch.equal(predicted[2], predicted[3])
    with pytest.raises(ValueError, match="inner model takes actions of size"):
        JumpyModel(WorldModel("sssm", A, **SMALL), 2, A)


# ---------------------------------------------------------------- building, training, config

FAMILY_CASES = [("dssm", 1), ("sssm", 1), ("ar", 1), ("sssm", 2), ("ar", 2), ("rssm", 2)]


def config(family, jump, *overrides):
    return load_config("debug", ["model.cnn_depth=2", f"model.family={family}", f"model.jump={jump}", *overrides])


@pytest.mark.parametrize("family, jump", FAMILY_CASES)
def test_from_config_builds_the_family_and_actors_load_learner_weights(family, jump):
    cfg = config(family, jump)
    model = WorldModel.from_config(cfg, 5)
    assert model.action_size == 5 and model.jump == jump
    inner = model.inner if jump > 1 else model
    assert isinstance(inner, AutoregressiveModel) == (family == "ar")
    assert inner.action_size == 5 * jump
    torch.manual_seed(1)
    WorldModel.from_config(cfg, 5).load_state_dict(model.state_dict())


@pytest.mark.parametrize("family, jump", FAMILY_CASES)
@pytest.mark.parametrize("discrete", [False, True])
def test_learner_trains_every_family(family, jump, discrete):
    learner = Learner(config(family, jump), 4 if discrete else 2, discrete=discrete, seed=0, precision="float32")
    batch = moving_square(2, 8, 0)
    if discrete:
        batch["actions"] = np.random.default_rng(0).integers(0, 4, (2, 8))
    metrics = learner.update(batch)
    assert metrics["learner/update_applied"] == 1.0 and np.isfinite(metrics["learner/total_loss"])
    assert {"learner/image_loss", "learner/reward_loss"} <= set(metrics)
    assert ("learner/kl" in metrics) == (family not in ("ar", "dssm"))
    assert ("learner/prediction_loss" in metrics) == (family == "dssm")


def test_latent_overshooting_trains_the_sssm():
    learner = Learner(config("sssm", 2, "loss.overshooting_distance=3"), 2, seed=0, precision="float32")
    metrics = learner.update(moving_square(2, 8, 0))
    assert metrics["learner/update_applied"] == 1.0 and "learner/overshooting_kl_d3" in metrics


def test_dssm_open_loop_loss_equals_filtering_then_stepping_the_transition():
    torch.manual_seed(0)
    cfg = config("dssm", 1)
    model = WorldModel("dssm", A, **SMALL)
    observed, actions, rewards = frames(), torch.randn(T, B, A), torch.randn(T, B)
    _, terms, metrics = open_loop_loss(model, observed, actions, rewards, cfg.loss)
    state, filtered = model.rssm.initial(B), []
    for t in range(T):
        state = model.observe_step(state, actions[t], observed[t])
        filtered.append(state)
    state, predicted = filtered[CONTEXT - 1], []
    for t in range(CONTEXT, T):  # the transition alone from the filtered state at C-1
        state, _ = model.rssm.step(state, actions[t])
        predicted.append(state)
    decode = lambda states: torch.stack([model.decode(s) for s in states])  # noqa: E731
    reward = lambda states: torch.stack([model.predict_reward(s) for s in states])  # noqa: E731
    torch.testing.assert_close(terms["image"], image_nll(decode(filtered), observed))
    torch.testing.assert_close(terms["prediction"], image_nll(decode(predicted), observed[CONTEXT:]))
    torch.testing.assert_close(terms["reward"], reward_nll(torch.cat([reward(filtered), reward(predicted)]),
                                                           torch.cat([rewards, rewards[CONTEXT:]])))
    assert "learner/kl" not in metrics


def test_jumpy_loss_is_the_inner_loss_on_the_packed_chunk():
    torch.manual_seed(0)
    cfg = config("sssm", 2)
    model = WorldModel.from_config(cfg, A)
    observed, actions, rewards = frames(4), torch.randn(4, B, A), torch.randn(4, B)
    total, _, _ = model_loss(model, observed, actions, rewards, cfg.loss, torch.Generator().manual_seed(0))
    packed, _, _ = model_loss(model.inner, *pack_jumps(observed, actions, rewards, 2), cfg.loss,
                              torch.Generator().manual_seed(0))
    assert torch.equal(total, packed)


@pytest.mark.parametrize("overrides, words", [
    (["model.jump=3"], ["train.chunk_length (8)", "divisible by model.jump (3)"]),
    (["model.jump=8", "planner.horizon=4"], ["planner.horizon (4)", "model.jump (8)"]),
    (["model.jump=2", "loss.overshooting_distance=5"], ["overshooting_distance (5)", "(4)"]),
    (["model.family=ar", "loss.overshooting_distance=2"], ["model.family=ar", "set it to 0"]),
    (["model.family=dssm", "loss.overshooting_distance=2"], ["model.family=dssm", "predicted frames"]),
    (["model.state_channels=0"], ["model.state_channels", "> 0"]),
])
def test_config_rejects_what_a_family_cannot_do(overrides, words):
    with pytest.raises(ConfigError) as error:
        load_config("debug", overrides)
    for word in words:
        assert word in str(error.value)


def test_atari_presets_for_the_comparison():
    for name, task in [("atari-mspacman", "atari:MsPacman"), ("atari-bowling", "atari:Bowling"),
                       ("atari-centipede", "atari:Centipede"), ("atari-chopper-command", "atari:ChopperCommand"),
                       ("atari-surround", "atari:Surround")]:
        cfg = load_config(f"{name}+debug", ["model.family=sssm", "model.jump=2"])
        assert cfg.env.task == task and cfg.env.action_repeat == 4
