"""A run's bookkeeping, kept apart from Ray so it can be reasoned about (and tested) alone.

    ledger = RunLedger.open(run_dir, cfg, resume=True)    # progress.json read (or a fresh RunState)
    records = ledger.record(actor, result)                  # an actor's collect() result: counted once
    ledger.actor_lost(actor)                                # it died (or its replay write failed) mid-collect
    ledger.save(run_dir)                                    # progress.json, atomically
    summary = ledger.summary(run_dir, updates, evaluation)  # what summary.json holds

Every episode an actor reports is counted towards the budget once (by id, whatever retries happened);
the acknowledged ones (stored in replay, or found stored there already) are what a restart must keep.
:class:`EvalSchedule` says when the next periodic evaluation is due.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Mapping

from common.config import Config, ConfigError
from common.fileio import write_atomic

PROGRESS = "progress.json"
SUMMARY = "summary.json"
LEARNER_GIVE_UP = 5
"""Learner deaths in a row, without one update in between, after which the run stops (it would never train)."""


class LedgerError(ConfigError):
    """progress.json cannot be read back; the message names the file and what to do."""


@dataclasses.dataclass
class RunState:
    """What survives a driver restart (RUN_DIR/progress.json): counted env steps and episodes, sessions."""

    env_steps: int = 0
    """Env steps (action repeat counted) of every acknowledged episode, over all sessions."""
    episodes: int = 0
    """Acknowledged episodes over all sessions."""
    session: int = 0
    """Driver sessions before this one (0: the run's first)."""
    preset: str = ""
    """The preset names the run's config came from (labels its metrics; kept across --resume)."""

    @classmethod
    def load(cls, run_dir: str | Path) -> RunState | None:
        """The saved state, or None when the run has none yet; LedgerError when the file is damaged."""
        path = Path(run_dir) / PROGRESS
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise LedgerError(f"{path}: cannot be read ({error.strerror})") from None
        try:
            data = json.loads(text)
            fields = {f.name: f.type for f in dataclasses.fields(cls)}
            if not isinstance(data, dict) or not set(data) <= set(fields):
                raise ValueError("unexpected fields")
            state = cls(**data)
            numbers = (state.env_steps, state.episodes, state.session)
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers) \
                    or not isinstance(state.preset, str):
                raise ValueError("bad values")
        except (ValueError, TypeError):
            raise LedgerError(f"{path} is damaged (not the JSON object of counts the driver writes); restore it from "
                              f"a backup, or move it away to resume counting env steps from 0") from None
        return state

    def save(self, run_dir: str | Path) -> None:
        write_atomic(Path(run_dir) / PROGRESS, json.dumps(dataclasses.asdict(self)))


def _actor_counters() -> dict[str, float]:
    return {"actor/env_steps": 0, "actor/episodes": 0, "actor/restarts": 0, "actor/lost_episodes": 0}


class RunLedger:
    """Counts of one driver session on top of the saved :class:`RunState`; pure Python, no Ray, no files but its own."""

    def __init__(self, budget_env_steps: int, actors: int, envs_per_actor: int, state: RunState | None = None):
        self.budget = budget_env_steps
        self.envs_per_actor = envs_per_actor
        self.state = state or RunState()
        self.acknowledged: set[str] = set()
        self.returns: deque[float] = deque(maxlen=10)
        self.actor_restarts = self.learner_restarts = self.lost_episodes = self.redis_restarts = 0
        self.actor_stats = [_actor_counters() for _ in range(actors)]
        self.incarnation = [0] * actors
        self._learner_deaths_in_a_row = 0
        self._updates_at_last_death = -1

    @classmethod
    def open(cls, run_dir: str | Path, cfg: Config, *, resume: bool) -> RunLedger:
        """The ledger of a new session: the saved state moved on by one session when resuming."""
        state = RunState.load(run_dir) if resume else None
        if state is not None:
            state = dataclasses.replace(state, session=state.session + 1)
        return cls(cfg.train.budget_env_steps, cfg.cluster.actors, cfg.cluster.envs_per_actor, state)

    # ------------------------------------------------------------ what happens

    @property
    def budget_spent(self) -> bool:
        return self.state.env_steps >= self.budget

    def record(self, index: int, result: Mapping[str, Any]) -> list[dict]:
        """Count an actor's finished collect() call; returns one metrics record per episode it reported.

        An episode id seen before (an actor that reported the same episode twice) is not counted
        again. Records carry what metrics.jsonl keeps per episode (``stored`` says acknowledged).
        """
        stats = self.actor_stats[index]
        records = []
        for episode in result["episodes"]:
            if episode["id"] in self.acknowledged:
                continue
            if episode["stored"]:
                self.acknowledged.add(episode["id"])
            self.state.env_steps += episode["env_steps"]
            self.state.episodes += 1
            self.returns.append(episode["return"])
            stats["actor/env_steps"] += episode["env_steps"]
            stats["actor/episodes"] += 1
            stats.update({"actor/return": episode["return"], "actor/length": episode["length"]})
            records.append({"env_steps": self.state.env_steps, "actor": index, "episode": episode["id"],
                            "seed": episode["seed"], "stored": episode["stored"],
                            "metrics": {"actor/return": episode["return"], "actor/length": episode["length"],
                                        "actor/policy_version": episode["policy_version"], **result["metrics"]}})
        stats.update(result["metrics"])
        return records

    def actor_lost(self, index: int) -> int:
        """An actor's collect() ended without a result (its process died, or its replay stayed down): the
        episodes it was playing are lost whole. Returns the incarnation it is called with next."""
        self.actor_restarts += 1
        self.lost_episodes += self.envs_per_actor
        stats = self.actor_stats[index]
        stats["actor/restarts"] += 1
        stats["actor/lost_episodes"] += self.envs_per_actor
        self.incarnation[index] += 1
        return self.incarnation[index]

    def learner_died(self, updates: int) -> bool:
        """Count a learner death at ``updates`` updates; True when it keeps dying without training (give up)."""
        self.learner_restarts += 1
        if updates > self._updates_at_last_death:
            self._learner_deaths_in_a_row = 0
        self._updates_at_last_death = updates
        self._learner_deaths_in_a_row += 1
        return self._learner_deaths_in_a_row >= LEARNER_GIVE_UP

    def redis_restarted(self) -> None:
        self.redis_restarts += 1

    # ------------------------------------------------------------ what it says

    @property
    def recent_return(self) -> float | None:
        return sum(self.returns) / len(self.returns) if self.returns else None

    def driver_metrics(self, started_at: float) -> dict[str, float]:
        """``driver/*``: the run's counts as metrics.jsonl and Prometheus carry them."""
        recent = self.recent_return
        return {"driver/env_steps": self.state.env_steps, "driver/budget_env_steps": self.budget,
                **({"driver/recent_return": recent} if recent is not None else {}),
                "driver/start_time_s": started_at, "driver/episodes": self.state.episodes,
                "driver/actor_restarts": self.actor_restarts, "driver/learner_restarts": self.learner_restarts,
                "driver/lost_episodes": self.lost_episodes, "driver/redis_restarts": self.redis_restarts,
                "driver/acknowledged_episodes": len(self.acknowledged)}

    def summary(self, run_dir: str | Path, updates: int, evaluation: Mapping[str, Any], started_at: float) -> dict:
        """What summary.json holds: totals, this session's fault counts, the final evaluation."""
        return {"run_dir": str(run_dir), "env_steps": self.state.env_steps, "episodes": self.state.episodes,
                "updates": int(updates), "acknowledged_episodes": len(self.acknowledged),
                **self.driver_metrics(started_at), "eval": dict(evaluation)}

    def save(self, run_dir: str | Path) -> None:
        self.state.save(run_dir)


class EvalSchedule:
    """Periodic evaluations every ``every`` env steps (0: none), one at a time; a late one is not made up twice.

    None is due once ``budget`` env steps are spent: the final evaluation, on the final checkpoint, is the
    point there (a periodic one at the budget would play the same episodes again, minutes on a CPU).
    """

    def __init__(self, every: int, env_steps: int = 0, budget: float = math.inf):
        self.every, self.budget = every, budget
        self.next_at = self._after(env_steps)

    def due(self, env_steps: int, busy: bool) -> bool:
        return bool(self.every) and not busy and self.next_at <= env_steps < self.budget

    def started(self, env_steps: int) -> None:
        """An evaluation started at ``env_steps``: the next is due at the following multiple of ``every``."""
        self.next_at = self._after(env_steps)

    def _after(self, env_steps: int) -> int:
        return (env_steps // self.every + 1) * self.every if self.every else math.inf
