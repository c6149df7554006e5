"""The Actor: ``envs_per_actor`` environments, a copy of the world model and a CEM planner. No Ray, no Redis.

Every agent step is one batched plan for all environments that are planning::

    belief_t = q(s_t | belief_tm1, a_tm1, o_t)          one observe_step over all envs
    a_t      = CEM(belief_t) + exploration noise          one plan over all envs
    o_t+1, r_t = env.step(a_t)                           each env, action repeat inside

An environment whose episode ends writes it (through ``write``) and starts the next one at once;
its belief restarts from the initial state. The first ``seed_episodes`` episodes of this actor
use uniform random actions (PlaNet's seed episodes). Continuous exploration adds N(0, noise^2)
and clips; discrete exploration takes a uniformly random action with probability ``noise``.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import torch

from actors.planner import CEMPlanner, add_exploration
from actors.rollout import EpisodeRecorder
from common.config import Config
from common.envs import make_env_from_config
from common.envs.preprocess import preprocess_observation
from common.episode import Episode
from common.timing import Stopwatch
from learner.state import State
from learner.world_model import WorldModel, one_hot_actions


ACTOR_SECTIONS = ("plan", "env", "observe", "write")
"""Where an Actor's time goes (``actor/<section>_s``): CEM plans, environment steps (physics and rendering, action
repeat inside), belief updates from new frames, replay writes (retries while Redis restarts included)."""


class Actor:
    def __init__(self, cfg: Config, *, index: int, run: str, seed: int, write: Callable[[Episode], object],
                 seed_episodes: int = 0, device: str = "cpu", precision: str = "float32"):
        """``seed``: this actor's seed (environment k gets seed + k); ``write`` stores a finished episode."""
        self.cfg, self.index, self.run, self.seed, self.write = cfg, index, run, seed, write
        self.device = torch.device(device)
        self.envs = [make_env_from_config(cfg.env, seed + k) for k in range(cfg.cluster.envs_per_actor)]
        self.spec = self.envs[0].spec
        torch.manual_seed(seed)
        self.model = WorldModel.from_config(cfg, self.spec.action.size).to(self.device).eval()
        self.planner = CEMPlanner.from_config(self.model, cfg.planner, self.spec.action, device=self.device,
                                              precision=precision,
                                              generator=torch.Generator(self.device).manual_seed(seed))
        self.rng = np.random.default_rng(seed)
        self.policy_version = 0
        self.random_left = seed_episodes
        self.episodes_started = 0
        self.plan_ms: list[float] = []
        self.watch = Stopwatch(ACTOR_SECTIONS)
        self._recorders: list[EpisodeRecorder] = []
        self._random: list[bool] = []
        self._indices: list[int] = []
        for env in self.envs:
            self._begin(env, None)
        count = len(self.envs)
        self._belief = self.model.rssm.initial(count, self.device)
        self._last_action = torch.zeros(count, self.spec.action.size, device=self.device)
        self._update_belief()

    # ------------------------------------------------------------ weights

    def load_weights(self, version: int, weights: Mapping[str, torch.Tensor]) -> None:
        """Adopt the learner's weights; the next plans use them (beliefs of running episodes are kept)."""
        self.model.load_state_dict(weights)
        self.policy_version = version

    # ------------------------------------------------------------ acting

    def step(self, explore: bool = True) -> list[Episode]:
        """One agent step in every environment; returns the episodes that ended (already written)."""
        actions = self._act(explore)
        finished, restarted = [], []
        for k, env in enumerate(self.envs):
            with self.watch.section("env"):
                step = env.step(actions[k])
            self._recorders[k].add(actions[k], step)
            if step.last:
                episode = self._recorders[k].build(run=self.run, actor=self.index, seed=self.seed,
                                                   index=self._indices[k], policy_version=self.policy_version)
                with self.watch.section("write"):
                    self.write(episode)
                finished.append(episode)
                self._begin(env, k)
                restarted.append(k)
        self._last_action = self._model_actions(actions)
        for k in restarted:  # a new episode starts from the initial state after a zero action
            self._belief = self._reset_rows(self._belief, k)
            self._last_action[k] = 0
        self._update_belief()
        return finished

    def run_episodes(self, count: int, explore: bool = True) -> list[Episode]:
        """Step until ``count`` episodes have ended (across all environments)."""
        done: list[Episode] = []
        while len(done) < count:
            done += self.step(explore)
        return done

    def close(self) -> None:
        for env in self.envs:
            env.close()

    # ------------------------------------------------------------ internals

    def _begin(self, env, k: int | None) -> None:
        recorder = EpisodeRecorder(env.spec, env.reset())
        random = self.random_left > 0
        self.random_left -= int(random)
        if k is None:
            self._recorders.append(recorder)
            self._random.append(random)
            self._indices.append(self.episodes_started)
        else:
            self._recorders[k], self._random[k], self._indices[k] = recorder, random, self.episodes_started
        self.episodes_started += 1

    def _act(self, explore: bool) -> list:
        action_spec = self.spec.action
        actions: list = [action_spec.sample(self.rng) if r else None for r in self._random]
        planning = [k for k, r in enumerate(self._random) if not r]
        if planning:
            start = time.perf_counter()
            # The copy to the host waits for the plan's kernels, so plan_ms is the plan's time on a GPU too.
            planned = self.planner.plan(self._belief[planning]).cpu()  # (P, A) or (P,)
            self.plan_ms.append(1000 * (time.perf_counter() - start))
            self.watch.add("plan", self.plan_ms[-1] / 1000)
            noise = self.cfg.planner.exploration_noise if explore else 0.0
            if action_spec.discrete:
                for row, k in enumerate(planning):
                    greedy = int(planned[row])
                    actions[k] = int(self.rng.integers(action_spec.size)) if self.rng.random() < noise else greedy
            else:
                planned = add_exploration(planned, noise, action_spec.low, action_spec.high)
                for row, k in enumerate(planning):
                    actions[k] = planned[row].numpy()
        return actions

    def _model_actions(self, actions: list) -> torch.Tensor:
        """Environment actions -> the (E, A) float form the model takes (one-hot when discrete)."""
        if self.spec.action.discrete:
            return one_hot_actions(torch.as_tensor(actions, device=self.device), self.spec.action.size)
        return torch.as_tensor(np.stack(actions), dtype=torch.float32, device=self.device)

    def _reset_rows(self, belief: State, k: int) -> State:
        """Row k of the belief back to the initial state (a new episode)."""
        return State.cat([belief[:k], self.model.rssm.initial(1, self.device), belief[k + 1:]])

    @torch.inference_mode()
    def _update_belief(self) -> None:
        """belief_t = q(s_t | belief_tm1, a_tm1, o_t) for every environment at once."""
        with self.watch.section("observe"):
            frames = torch.as_tensor(np.stack([r.observations[-1] for r in self._recorders]), device=self.device)
            frames = frames.permute(0, 3, 1, 2)  # (E, H, W, 3) -> (E, 3, H, W)
            observation = preprocess_observation(frames, self.cfg.env.bit_depth)
            self._belief = self.model.observe_step(self._belief, self._last_action, observation)
