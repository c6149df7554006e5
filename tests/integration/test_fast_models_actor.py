"""Actors with Buesing et al.'s families on real Atari frames: the belief every agent step, plans, weights."""

import pytest
import torch

from actors.actor import Actor
from common.config import load_config
from learner.learner import Learner


@pytest.mark.parametrize("family, jump", [("sssm", 2), ("dssm", 1), ("ar", 1)])
def test_actor_plans_with_the_family_and_the_learners_weights(family, jump):
    # 6-step episodes: chunks of 6 (the debug preset's 8 would be longer than an episode, which check() refuses).
    cfg = load_config("atari-mspacman+debug", ["env.max_env_steps=24", "train.chunk_length=6",
                                               "cluster.envs_per_actor=2", "model.cnn_depth=2",
                                               f"model.family={family}", f"model.jump={jump}"])
    actor = Actor(cfg, index=0, run="run-fast", seed=0, write=lambda e: None)
    learner = Learner(cfg, actor.spec.action.size, discrete=True, seed=1)
    actor.load_weights(3, learner.weights())
    episodes = actor.run_episodes(2)
    assert all(e.discrete and e.length == 6 and e.info.policy_version == 3 for e in episodes)
    assert all(0 <= a < 9 for e in episodes for a in e.actions)
    assert actor.plan_ms, "every step after the seed episodes was planned"
    assert torch.isfinite(actor._belief.deter).all()
