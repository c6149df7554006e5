"""One episode of an environment under a policy, recorded as an :class:`Episode`.

The seed episodes of every run (random actions) and the demo of ``orrery rollout``
use this loop; planning actors reuse it with the CEM planner as the policy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from common.envs import ActionSpec, PixelEnv
from common.episode import Episode, EpisodeInfo

Policy = Callable[[np.ndarray], "np.ndarray | int"]
"""Maps the current (H, W, 3) uint8 frame to an action."""


def random_policy(action: ActionSpec, seed: int) -> Policy:
    """Uniform random actions within the bounds (PlaNet's seed episodes)."""
    rng = np.random.default_rng(seed)
    return lambda _observation: action.sample(rng)


def episode_id(run: str, actor: int, seed: int, index: int) -> str:
    """Deterministic id, so a retried write of the same episode is recognised (idempotent replay)."""
    return f"{run}.a{actor}.s{seed}.e{index:06d}"


def run_episode(env: PixelEnv, policy: Policy, *, run: str, actor: int = 0, seed: int = 0, index: int = 0,
                policy_version: int = 0, on_step: Callable[[int], None] | None = None) -> Episode:
    """Reset ``env``, act until the episode ends, return it with o_0..o_T, a_0..a_{T-1}, r_0..r_{T-1}.

    ``on_step(t)`` is called after every agent step (progress display).
    """
    spec = env.spec
    observations = [env.reset()]
    actions, rewards, terminals = [], [], []
    env_steps = 0
    while True:
        action = policy(observations[-1])
        step = env.step(action)
        observations.append(step.observation)
        actions.append(spec.action.check(action))
        rewards.append(step.reward)
        terminals.append(step.terminal)
        env_steps += step.env_steps
        if on_step is not None:
            on_step(len(actions))
        if step.last:
            break
    info = EpisodeInfo(run=run, actor=actor, seed=seed, episode_id=episode_id(run, actor, seed, index),
                       policy_version=policy_version, task=spec.task, env_steps=env_steps)
    return Episode(
        observations=np.stack(observations),  # (T+1, H, W, 3)
        actions=np.asarray(actions, np.int64 if spec.action.discrete else np.float32),  # (T,) or (T, A)
        rewards=np.asarray(rewards, np.float32),  # (T,)
        terminals=np.asarray(terminals, bool),  # (T,)
        info=info,
    )
