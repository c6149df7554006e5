"""Recording episodes as an environment is stepped, and the plain one-episode loop.

The seed episodes of every run (random actions), the planning actors and the demo of
``orrery rollout`` all record through :class:`EpisodeRecorder`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from common.envs import ActionSpec, PixelEnv, Step
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


class EpisodeRecorder:
    """Collects o_0..o_T, a_0..a_{T-1}, r_0..r_{T-1} of one episode and builds the :class:`Episode`."""

    def __init__(self, spec, first_observation: np.ndarray):
        self.spec = spec
        self.observations = [first_observation]
        self.actions: list = []
        self.rewards: list[float] = []
        self.terminals: list[bool] = []
        self.env_steps = 0

    def add(self, action, step: Step) -> None:
        """Record the action taken and what the environment returned for it."""
        self.observations.append(step.observation)
        self.actions.append(self.spec.action.check(action))
        self.rewards.append(step.reward)
        self.terminals.append(step.terminal)
        self.env_steps += step.env_steps

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    def build(self, *, run: str, actor: int, seed: int, index: int, policy_version: int = 0) -> Episode:
        info = EpisodeInfo(run=run, actor=actor, seed=seed, episode_id=episode_id(run, actor, seed, index),
                           policy_version=policy_version, task=self.spec.task, env_steps=self.env_steps)
        return Episode(
            observations=np.stack(self.observations),  # (T+1, H, W, 3)
            actions=np.asarray(self.actions, np.int64 if self.spec.action.discrete else np.float32),  # (T,) | (T, A)
            rewards=np.asarray(self.rewards, np.float32),  # (T,)
            terminals=np.asarray(self.terminals, bool),  # (T,)
            info=info,
        )


def run_episode(env: PixelEnv, policy: Policy, *, run: str, actor: int = 0, seed: int = 0, index: int = 0,
                policy_version: int = 0, on_step: Callable[[int], None] | None = None) -> Episode:
    """Reset ``env``, act until the episode ends, return it. ``on_step(t)`` follows every agent step."""
    recorder = EpisodeRecorder(env.spec, env.reset())
    while True:
        action = policy(recorder.observations[-1])
        step = env.step(action)
        recorder.add(action, step)
        if on_step is not None:
            on_step(recorder.length)
        if step.last:
            return recorder.build(run=run, actor=actor, seed=seed, index=index, policy_version=policy_version)
