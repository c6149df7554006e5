"""What a run tells people: ``metrics.jsonl`` (one JSON object per line, each with ``env_steps``), its
Prometheus endpoint (cluster/exporter.py) and a progress line every few seconds (a live bar on a terminal).

:class:`Telemetry` is the driver's one handle on all three; :class:`MetricsLog` and :class:`Progress` are
its parts."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping


class MetricsLog:
    """Appends records to RUN_DIR/metrics.jsonl; flushed per record, so a crash loses nothing written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", buffering=1)

    def write(self, env_steps: int, metrics: Mapping[str, float | int | str], **extra) -> None:
        record = {"time": round(time.time(), 3), "env_steps": int(env_steps), **extra}
        record.update({k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))})
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


class Progress:
    """One status line: env steps against the budget, episodes, recent return, updates, replay size."""

    def __init__(self, budget: int, every_s: float = 5.0, stream=None, enabled: bool = True):
        self.budget, self.every_s, self.enabled = budget, every_s, enabled
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, *, env_steps: int, episodes: int, recent_return: float | None, updates: int,
               updates_per_s: float, replay_steps: int, version: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < (0.5 if self.tty else self.every_s)):
            return
        self.last = now
        elapsed = int(now - self.start)
        done = min(1.0, env_steps / self.budget)
        bar = f"[{'#' * int(20 * done)}{'.' * (20 - int(20 * done))}] " if self.tty else ""
        ret = "-" if recent_return is None else f"{recent_return:.1f}"
        line = (f"{bar}{elapsed // 60:02d}:{elapsed % 60:02d} env steps {env_steps}/{self.budget} ({100 * done:.0f}%)"
                f" | episodes {episodes} | return {ret} (last 10) | updates {updates} ({updates_per_s:.1f}/s)"
                f" | replay {replay_steps} steps | weights v{version}")
        print(("\r" + line.ljust(120)) if self.tty else line, end="" if self.tty else "\n", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.tty and self.enabled:
            print(file=self.stream)


class Telemetry:
    """Where one run's numbers go: ``metrics.jsonl``, the Prometheus collector and endpoint, the status line.

        telemetry = Telemetry(run_dir, cfg, preset, ledger, log=print, show_progress=True)
        telemetry.open()                         # metrics.jsonl appended to; endpoint served and registered
        telemetry.episodes(records, actor)       # what RunLedger.record returned
        telemetry.tick(learner, replay)          # once a driver tick
        telemetry.evaluation(env_steps, values)  # eval/* of one evaluation
        telemetry.close()
    """

    def __init__(self, run_dir: Path, cfg, preset: str, ledger, *, log=print, show_progress: bool = True):
        from cluster.exporter import RunCollector

        self.run_dir, self.cfg, self.ledger, self.log = Path(run_dir), cfg, ledger, log
        self.show_progress = show_progress
        self.started_at = time.time()
        self.collector = RunCollector({"run": self.run_dir.name, "task": cfg.env.task, "seed": cfg.train.seed},
                                      {"family": cfg.model.family, "preset": preset})
        self.metrics_log: MetricsLog | None = None
        self.server = None
        self.progress: Progress | None = None

    def open(self) -> None:
        from cluster.exporter import MetricsServer

        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.progress = Progress(self.cfg.train.budget_env_steps, enabled=self.show_progress)
        for index, stats in enumerate(self.ledger.actor_stats):  # every actor's counters exist from the start
            self.collector.update(stats, actor=index)
        if self.cfg.cluster.metrics_port >= 0:
            self.server = MetricsServer(self.collector, self.run_dir.name, host=self.cfg.cluster.metrics_host,
                                        port=self.cfg.cluster.metrics_port)
            self.log(f"metrics: {self.server.url} (Prometheus; `orrery status` lists running runs)")

    def driver_metrics(self) -> dict:
        return self.ledger.driver_metrics(self.started_at)

    def episodes(self, records: list[dict], actor: int) -> None:
        """One metrics.jsonl line per finished episode; the actor's counters to Prometheus."""
        for record in records:
            self.metrics_log.write(record["env_steps"], record["metrics"], actor=record["actor"],
                                   episode=record["episode"], seed=record["seed"], stored=record["stored"])
        self.collector.update(self.ledger.actor_stats[actor], actor=actor)

    def tick(self, learner: Mapping, replay: Mapping) -> None:
        """The tick's numbers to metrics.jsonl and Prometheus, and the status line (every few seconds)."""
        driver = self.driver_metrics()
        self.metrics_log.write(self.ledger.state.env_steps, {**learner, **replay, **driver})
        self.collector.update({**learner, **replay, **driver})
        published = learner.get("learner/policy_version")
        for index, stats in enumerate(self.ledger.actor_stats):
            if published is not None and "actor/policy_version" in stats:
                lag = max(0, published - stats["actor/policy_version"])
                self.collector.update({"actor/policy_lag": lag}, actor=index)
        self.status(learner, replay)

    def status(self, learner: Mapping, replay: Mapping, force: bool = False) -> None:
        """The status line: at most every few seconds (``force``: now)."""
        self.progress.update(env_steps=self.ledger.state.env_steps, episodes=self.ledger.state.episodes,
                             recent_return=self.ledger.recent_return,
                             updates=int(learner.get("learner/updates", 0)),
                             updates_per_s=learner.get("learner/updates_per_s", 0.0),
                             replay_steps=int(replay.get("replay/steps", 0)),
                             version=int(learner.get("learner/policy_version", 0)), force=force)

    def evaluation(self, env_steps: int, values: Mapping) -> None:
        self.metrics_log.write(env_steps, values)
        self.collector.update({**values, "eval/env_steps": env_steps})

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.metrics_log is not None:
            self.metrics_log.close()
            self.metrics_log = None
        if self.server is not None:
            self.server.stop()
            self.server = None
