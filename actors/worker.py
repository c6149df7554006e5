"""The Actor's thin Ray wrapper: pulls newer weights between episodes, writes episodes to replay, reports.

The driver keeps one ``collect()`` call in flight per actor. If the process dies, Ray restarts
it and the driver calls again with the next ``incarnation``: the new Actor takes a fresh seed
(so episode ids never collide with stored ones), and the episodes that were in flight are lost
whole, never half-written (a replay write is atomic).
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from actors.actor import Actor
from actors.evaluator import evaluate, render_results, summarize
from common.config import from_yaml
from common.device import setup_process
from common.episode import Episode
from common.names import weight_store_name
from common.timing import Stopwatch
from replay import REDIS_DOWN, LimiterTimeout, ReplayConnectionError, SamplesPerInsert
from replay.reconnect import open_replay


@ray.remote(max_retries=1)
def evaluation_task(config_yaml: str, weights: dict, version: int, *, episodes: int, seed: int, run: str,
                    env_steps: int, threads: int = 1, random_returns: list[float] | None = None) -> dict:
    """An evaluation off the driver: {"summary": returns.json's numbers, "files": {name: bytes}}.

    Runs as its own task so training goes on meanwhile and the driver only writes the files.
    ``weights`` arrives resolved (pass the weight store's ObjectRef; nothing is copied through the driver).
    """
    cfg = from_yaml(config_yaml)
    placed = setup_process("evaluation", gpu_ids=ray.get_gpu_ids(), precision=cfg.train.precision, threads=threads)
    result = evaluate(cfg, weights, version, episodes=episodes, seed=seed, run=run, device=placed.device,
                      precision=placed.precision, random_returns=random_returns)
    return {"summary": summarize(result, env_steps), "device": placed.describe(),
            "files": render_results(result, env_steps=env_steps, bit_depth=cfg.env.bit_depth)}


def actor_seed(train_seed: int, session: int, index: int, incarnation: int) -> int:
    """A distinct 31-bit seed per (run seed, driver session, actor, restart), recorded with every episode."""
    return int(np.random.SeedSequence([train_seed, session, index, incarnation]).generate_state(1)[0] % 2**31)


@ray.remote(max_restarts=-1, max_task_retries=0)
class ActorWorker:
    def __init__(self, config_yaml: str, index: int, run: str, session: int, replay_url: str,
                 seed_episodes: int, threads: int = 1, redis_wait_s: float = 120.0):
        self.cfg = from_yaml(config_yaml)
        # First, before any environment renders: device, threads, precision, EGL device (common/device.py).
        self.placed = setup_process(f"actor {index}", gpu_ids=ray.get_gpu_ids(), precision=self.cfg.train.precision,
                                    threads=threads)
        print(self.placed.describe(), flush=True)  # the worker's log
        self.index, self.run, self.session = index, run, session
        self.store = ray.get_actor(weight_store_name(run))
        self.seed_episodes = seed_episodes
        self.redis_wait_s = redis_wait_s
        self.replay = open_replay(replay_url, run, wait_s=redis_wait_s)  # a restart may find Redis restarting too
        self.limiter = SamplesPerInsert.for_run(self.cfg, counters=self.replay)
        self.insert_wait_s = 0.0
        self.watch = Stopwatch(("weights",))  # the Actor keeps its own sections (actors/actor.py, ACTOR_SECTIONS)
        self.actor: Actor | None = None
        self.incarnation = -1

    def pid(self) -> int:
        return os.getpid()

    def collect(self, episodes: int, incarnation: int) -> dict:
        """Run until ``episodes`` episodes have ended and been stored; return what happened.

        Returns {"episodes": [{id, return, length, env_steps, policy_version, seed, stored}], "metrics": {...},
        "device": where it plans (common/device.py's line)}.
        """
        if self.actor is None or incarnation != self.incarnation:
            self._start(incarnation)
        self._wait_for_learner()
        self._refresh_weights()
        start = time.perf_counter()
        done = self.actor.run_episodes(episodes)
        seconds = time.perf_counter() - start
        plans = self.actor.plan_ms[-200:]
        reports = [self._report(e) for e in done]
        metrics = {
            "actor/env_steps_per_s": sum(e.info.env_steps for e in done) / max(seconds, 1e-9),
            "actor/plan_ms": float(np.mean(plans)) if plans else 0.0,
            "actor/policy_version": self.actor.policy_version,
            "actor/incarnation": incarnation,
            "actor/insert_wait_s": self.insert_wait_s,
            **self.actor.watch.metrics("actor"), **self.watch.metrics("actor"),
        }
        return {"episodes": reports, "metrics": metrics, "device": self.placed.describe()}

    def _start(self, incarnation: int) -> None:
        if self.actor is not None:
            self.actor.close()
        seed = actor_seed(self.cfg.train.seed, self.session, self.index, incarnation)
        # Seed episodes are owed once; a restarted actor plans from the start.
        self.actor = Actor(self.cfg, index=self.index, run=self.run, seed=seed, write=self._write,
                           seed_episodes=self.seed_episodes if incarnation == 0 else 0, device=self.placed.device,
                           precision=self.placed.precision)
        self.incarnation = incarnation
        self._stored: dict[str, bool] = {}

    def _wait_for_learner(self, timeout: float = 120.0) -> None:
        """Samples-per-insert: when the learner is behind PlaNet's update ratio, wait before collecting more.

        After ``timeout`` collect anyway: a learner that is restarting must not stall the actors forever.
        """
        try:
            self.insert_wait_s += self.limiter.wait_insert(timeout=timeout)
        except LimiterTimeout:
            self.insert_wait_s += timeout
        except REDIS_DOWN:
            pass  # Redis is restarting; _write waits for it to come back

    def _refresh_weights(self) -> None:
        """Adopt a newer published version, if any (between episodes)."""
        with self.watch.section("weights"):
            try:
                newer = ray.get(self.store.newer_than.remote(self.actor.policy_version), timeout=30)
                if newer is not None:
                    version, (ref,) = newer
                    self.actor.load_weights(version, ray.get(ref, timeout=60))
            except (ray.exceptions.RayError, TimeoutError):
                pass  # the learner is restarting; keep planning with the weights in hand

    def _write(self, episode: Episode) -> None:
        """Store an episode; while Redis is down (restarting), wait for it and retry (add is idempotent)."""
        deadline = time.monotonic() + self.redis_wait_s
        while True:
            try:
                self.replay.add(episode)  # False: a retry of a write that had landed; stored all the same
                self._stored[episode.info.episode_id] = True
                return
            except ReplayConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)  # the replay's client reconnects by itself once Redis is back

    def _report(self, episode: Episode) -> dict:
        info = episode.info
        return {"id": info.episode_id, "return": float(episode.rewards.sum()), "length": episode.length,
                "env_steps": info.env_steps, "policy_version": info.policy_version, "seed": info.seed,
                "stored": self._stored.pop(info.episode_id, False)}
