"""The plain Actor with real environments: batched planning over several envs, seed episodes, weights."""

import numpy as np
import pytest
import torch

from actors.actor import Actor
from common.config import load_config
from common.episode import decode, encode
from learner.world_model import WorldModel


def test_actor_collects_and_writes_episodes_from_several_envs():
    cfg = load_config("dmc-cartpole-swingup+debug", ["cluster.envs_per_actor=2"])
    written = []
    actor = Actor(cfg, index=3, run="run-a", seed=40, write=written.append, seed_episodes=2)
    assert actor._random == [True, True]
    episodes = actor.run_episodes(4)
    assert [e.info.episode_id for e in episodes] == [e.info.episode_id for e in written]
    assert len({e.info.episode_id for e in episodes}) == 4
    assert all(e.length == 200 // 8 and e.info.env_steps == 200 and e.info.actor == 3 for e in episodes)
    assert {e.info.seed for e in episodes} == {40}
    assert actor.plan_ms, "episodes after the seed episodes are planned"
    seconds = actor.watch.seconds  # where its time went (actor/<section>_s)
    assert seconds["plan"] == pytest.approx(sum(actor.plan_ms) / 1000)
    assert seconds["env"] > 0 and seconds["observe"] > 0 and seconds["write"] >= 0
    for e in episodes:  # planned actions with exploration noise stay in bounds
        assert np.all(np.abs(e.actions) <= 1.0)
        assert decode(encode(e)).length == e.length
    # the two environments got different seeds: their first frames differ
    assert not np.array_equal(episodes[0].observations[0], episodes[1].observations[0])


def test_actor_tags_episodes_with_the_loaded_weight_version():
    cfg = load_config("dmc-cartpole-swingup+debug")
    actor = Actor(cfg, index=0, run="run-b", seed=0, write=lambda e: None)
    assert actor.run_episodes(1)[0].info.policy_version == 0
    torch.manual_seed(1)
    weights = WorldModel.from_config(cfg, 1).state_dict()
    actor.load_weights(7, weights)
    assert all(torch.equal(p, weights[n]) for n, p in actor.model.state_dict().items())
    assert actor.run_episodes(1)[0].info.policy_version == 7


def test_actor_plans_discrete_actions_on_atari():
    cfg = load_config("atari-mspacman+debug", ["env.max_env_steps=40", "cluster.envs_per_actor=2"])
    actor = Actor(cfg, index=0, run="run-c", seed=0, write=lambda e: None)
    episodes = actor.run_episodes(2)
    assert all(e.discrete and e.length == 10 for e in episodes)
    assert all(0 <= a < 9 for e in episodes for a in e.actions)


def test_evaluation_without_exploration_is_repeatable_given_the_seed():
    cfg = load_config("dmc-cartpole-swingup+debug")
    runs = [Actor(cfg, index=0, run="run-d", seed=9, write=lambda e: None).run_episodes(1, explore=False)[0]
            for _ in range(2)]
    assert np.array_equal(runs[0].actions, runs[1].actions)
