"""The run driver: starts replay, learner, weight store and actors on Ray, watches the budget, shuts down.

    driver = Driver(cfg, run_dir)          # resume=True continues a run from its checkpoint and replay
    summary = driver.run()                 # blocks until the env-step budget is spent, then evaluates

Local runs start Ray and an embedded Redis themselves; with ``cluster.address`` and
``replay.url`` set they join a running cluster and its Redis. Every episode an actor acknowledges
is counted once; actors and the learner that die are restarted by Ray and called again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import ray

from actors.evaluator import describe, write_files
from actors.worker import ActorWorker, evaluation_task
from cluster.exporter import MetricsServer, RunCollector
from cluster.runlog import MetricsLog, Progress
from cluster.weight_store import WeightStore
from common.config import Config, ConfigError, to_yaml
from common.envs import make_env_from_config
from common.names import weight_store_name
from learner import checkpoint
from learner.worker import LearnerWorker
from replay import REDIS_DOWN, EmbeddedRedis, SequenceReplay

PROGRESS = "progress.json"


@dataclasses.dataclass
class RunState:
    """What survives a driver restart (RUN_DIR/progress.json): counted env steps and sessions."""

    env_steps: int = 0
    episodes: int = 0
    session: int = 0


class Driver:
    def __init__(self, cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False,
                 log: Callable[[str], None] = print, show_progress: bool = True, preset: str = "",
                 placement: Callable[[str, int], dict] | None = None, threads: int | None = None):
        """``log`` receives the driver's messages; ``show_progress`` prints the status line to stdout;
        ``preset`` (the preset names the config came from) labels the run's metrics; ``placement(role,
        index)`` gives extra Ray options for the "store", "learner" and each "actor" (a sweep pins them
        to the bundles of the run's placement group, cluster/supervisor.py); ``threads``: torch threads per
        learner and actor process (default: this node's cores shared among the run's processes)."""
        self.cfg, self.run_dir, self.log, self.show_progress = cfg, Path(run_dir), log, show_progress
        self.preset = preset
        self.placement = placement or (lambda role, index: {})
        self.threads = threads
        self.run_name = self.run_dir.name
        self.state = RunState()
        if resume:
            saved = json.loads((self.run_dir / PROGRESS).read_text()) if (self.run_dir / PROGRESS).exists() else {}
            self.state = RunState(**saved)
            self.state.session += 1
        elif (self.run_dir / PROGRESS).exists():
            raise ConfigError(f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} "
                              f"or choose another --run-dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        self.acknowledged: set[str] = set()
        self.returns: deque[float] = deque(maxlen=10)
        self.actor_restarts = self.learner_restarts = self.lost_episodes = self.redis_restarts = 0
        self.actor_stats = [{"actor/env_steps": 0, "actor/episodes": 0, "actor/restarts": 0, "actor/lost_episodes": 0}
                            for _ in range(cfg.cluster.actors)]
        self.collector = RunCollector({"run": self.run_name, "task": cfg.env.task, "seed": cfg.train.seed},
                                      {"family": cfg.model.family, "preset": preset})
        self.metrics_server: MetricsServer | None = None
        self.random_returns: list[float] | None = None
        self.started_at = time.time()
        self.server: EmbeddedRedis | None = None
        self._started_ray = False

    # ------------------------------------------------------------ start

    def start(self) -> None:
        cfg = self.cfg
        probe = make_env_from_config(cfg.env, cfg.train.seed)  # fails fast on an unknown task or a broken renderer
        self.spec = probe.spec
        probe.close()
        if cfg.replay.url:
            self.url = cfg.replay.url
        else:
            self.server = EmbeddedRedis(self.run_dir).start()
            self.url = self.server.url
        self.replay = SequenceReplay(self.url, self.run_name, capacity_steps=cfg.replay.capacity_steps)
        dashboard = ""
        if not ray.is_initialized():
            needed = cfg.cluster.actors + 2
            context = ray.init(address=cfg.cluster.address or None, include_dashboard=cfg.cluster.dashboard,
                               log_to_driver=False,
                               num_cpus=None if cfg.cluster.address else max(os.cpu_count() or 1, needed))
            dashboard = context.dashboard_url or ""
            self._started_ray = True
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a scheduler, `ray job stop`, kill) stops the run as cleanly as Ctrl-C; set after
            # ray.init, which installs a handler of its own that would exit without a checkpoint.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        self.store = WeightStore.options(name=weight_store_name(self.run_name), **self.placement("store", 0)).remote()
        config_yaml = to_yaml(cfg)
        threads = self.process_threads = self.threads or max(1, (os.cpu_count() or 1) // (cfg.cluster.actors + 1))
        gpu = self.gpu = ray.cluster_resources().get("GPU", 0) > 0
        self.learner = LearnerWorker.options(num_gpus=cfg.cluster.learner_gpus if gpu else 0,
                                             **self.placement("learner", 0)).remote(
            config_yaml, self.spec.action.size, self.spec.action.discrete, str(self.run_dir), self.run_name, self.url,
            threads)
        seeds_left = cfg.train.seed_episodes if self.state.session == 0 else 0
        shares = [seeds_left // cfg.cluster.actors + (i < seeds_left % cfg.cluster.actors)
                  for i in range(cfg.cluster.actors)]
        self.actors = [ActorWorker.options(num_gpus=cfg.cluster.actor_gpus if gpu else 0,
                                           **self.placement("actor", i)).remote(
            config_yaml, i, self.run_name, self.state.session, self.url, shares[i], threads)
            for i in range(cfg.cluster.actors)]
        self.incarnation = [0] * cfg.cluster.actors
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        for index, stats in enumerate(self.actor_stats):  # every actor's counters exist from the start
            self.collector.update(stats, actor=index)
        if cfg.cluster.metrics_port >= 0:
            self.metrics_server = MetricsServer(self.collector, self.run_name, host=cfg.cluster.metrics_host,
                                                port=cfg.cluster.metrics_port)
        self.log(f"orrery train: run {self.run_name} in {self.run_dir} | {cfg.env.task} | {cfg.cluster.actors} actor(s) x "
                 f"{cfg.cluster.envs_per_actor} env(s) | budget {cfg.train.budget_env_steps} env steps"
                 f"{' | resumed at ' + str(self.state.env_steps) if self.state.session else ''}")
        if self.metrics_server is not None:
            self.log(f"metrics: {self.metrics_server.url} (Prometheus; `orrery status` lists running runs)")
        if dashboard:
            self.log(f"Ray dashboard: http://{dashboard.removeprefix('http://')}")

    # ------------------------------------------------------------ the loop

    def run(self, on_tick: Callable[[Driver], None] | None = None) -> dict:
        """Train until the budget is spent, then evaluate; ``on_tick(driver)`` runs about once a second."""
        try:
            self.start()  # inside the try: whatever it started is stopped again if it fails half-way
            self._loop(on_tick)
            return self._finish()
        except KeyboardInterrupt:
            if getattr(self, "learner", None) is not None:
                self.log("interrupted: saving the learner's final checkpoint (Ctrl-C again to abandon it)")
                try:
                    ray.get(self.learner.stop.remote(), timeout=300)
                except ray.exceptions.RayError as error:
                    self.log(f"no final checkpoint ({error.__class__.__name__}); the last periodic one stays")
            raise
        finally:
            self.shutdown()

    def _loop(self, on_tick) -> None:
        cfg = self.cfg
        budget = cfg.train.budget_env_steps
        progress = Progress(budget, enabled=self.show_progress)
        self.train_ref = self.learner.train.remote()
        inflight = {self._collect(i): i for i in range(len(self.actors))} if self.state.env_steps < budget else {}
        learner_metrics: dict = {}
        metrics_ref = None
        next_eval = self._next_eval()
        evaluation = None  # (task ref, env steps, weight version) of the evaluation in flight
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                index = inflight.pop(ref)
                try:
                    self._account(index, ray.get(ref))
                except ray.exceptions.RayActorError:  # the actor process died: Ray restarts it
                    self.actor_restarts += 1
                    self.lost_episodes += cfg.cluster.envs_per_actor
                    self.actor_stats[index]["actor/restarts"] += 1
                    self.actor_stats[index]["actor/lost_episodes"] += cfg.cluster.envs_per_actor
                    self.collector.update(self.actor_stats[index], actor=index)
                    self.incarnation[index] += 1
                    self.log(f"actor {index} died; restarting it (incarnation {self.incarnation[index]})")
                if self.state.env_steps < budget:
                    inflight[self._collect(index)] = index
            self._watch_learner()
            if metrics_ref is not None and ray.wait([metrics_ref], timeout=0)[0]:
                try:
                    learner_metrics = ray.get(metrics_ref)
                except ray.exceptions.RayActorError:
                    pass
                metrics_ref = None
            if metrics_ref is None:
                metrics_ref = self.learner.metrics.remote()
            replay = self._replay_stats()
            self.metrics_log.write(self.state.env_steps, {**learner_metrics, **replay, **self._driver_metrics()})
            self._export(learner_metrics, replay)
            self._show(progress, learner_metrics, replay)
            if evaluation is not None and ray.wait([evaluation[0]], timeout=0)[0]:
                self._end_evaluation(*evaluation)
                evaluation = None
            if next_eval and self.state.env_steps >= next_eval and evaluation is None:
                evaluation = self._start_evaluation(final=False)
                next_eval = self._next_eval()
            if on_tick is not None:
                on_tick(self)
        self._show(progress, learner_metrics, self._replay_stats(), force=True)
        progress.close()
        if evaluation is not None:
            self._end_evaluation(*evaluation)

    def _show(self, progress: Progress, learner: dict, replay: dict, force: bool = False) -> None:
        progress.update(env_steps=self.state.env_steps, episodes=self.state.episodes,
                        recent_return=sum(self.returns) / len(self.returns) if self.returns else None,
                        updates=int(learner.get("learner/updates", 0)),
                        updates_per_s=learner.get("learner/updates_per_s", 0.0),
                        replay_steps=int(replay.get("replay/steps", 0)),
                        version=int(learner.get("learner/policy_version", 0)), force=force)

    def _replay_stats(self) -> dict:
        """replay/* metrics; while Redis is down, restart the embedded one and report nothing this tick.

        The replay's client reconnects by itself once the server answers again.
        """
        if self.server is not None and not self.server.running:
            self.redis_restarts += 1
            self.log("the embedded Redis stopped; restarting it on the same data (AOF)")
            self.server.start()
        try:
            return self.replay.stats()
        except REDIS_DOWN:  # an external Redis that is still restarting: try again next tick
            return {}

    def _collect(self, index: int):
        return self.actors[index].collect.remote(self.cfg.cluster.envs_per_actor, self.incarnation[index])

    def _account(self, index: int, result: dict) -> None:
        stats = self.actor_stats[index]
        for episode in result["episodes"]:
            if episode["stored"]:
                self.acknowledged.add(episode["id"])
            self.state.env_steps += episode["env_steps"]
            self.state.episodes += 1
            self.returns.append(episode["return"])
            stats["actor/env_steps"] += episode["env_steps"]
            stats["actor/episodes"] += 1
            stats.update({"actor/return": episode["return"], "actor/length": episode["length"]})
            self.metrics_log.write(self.state.env_steps, {
                "actor/return": episode["return"], "actor/length": episode["length"],
                "actor/policy_version": episode["policy_version"], **result["metrics"]},
                actor=index, episode=episode["id"], seed=episode["seed"], stored=episode["stored"])
        stats.update(result["metrics"])
        self.collector.update(stats, actor=index)
        tmp = self.run_dir / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(self.state)))
        os.replace(tmp, self.run_dir / PROGRESS)

    def _watch_learner(self) -> None:
        """A learner whose train() ended by dying is restarted by Ray from its checkpoint: call train() again."""
        if not ray.wait([self.train_ref], timeout=0)[0]:
            return
        try:
            ray.get(self.train_ref)
        except ray.exceptions.RayActorError:
            self.learner_restarts += 1
            self.log("learner died; Ray restarts it from its last checkpoint")
        # Any other error of train() is a bug, not a fault to ride out: ray.get raised it above.
        self.train_ref = self.learner.train.remote()

    def _export(self, learner: dict, replay: dict) -> None:
        """The tick's numbers to the Prometheus collector (actors are updated as they report)."""
        self.collector.update({**learner, **replay, **self._driver_metrics()})
        published = learner.get("learner/policy_version")
        for index, stats in enumerate(self.actor_stats):
            if published is not None and "actor/policy_version" in stats:
                lag = max(0, published - stats["actor/policy_version"])
                self.collector.update({"actor/policy_lag": lag}, actor=index)

    def _driver_metrics(self) -> dict:
        return {"driver/env_steps": self.state.env_steps, "driver/budget_env_steps": self.cfg.train.budget_env_steps,
                **({"driver/recent_return": sum(self.returns) / len(self.returns)} if self.returns else {}),
                "driver/start_time_s": self.started_at,
                "driver/episodes": self.state.episodes, "driver/actor_restarts": self.actor_restarts,
                "driver/learner_restarts": self.learner_restarts, "driver/lost_episodes": self.lost_episodes,
                "driver/redis_restarts": self.redis_restarts,
                "driver/acknowledged_episodes": len(self.acknowledged)}

    def _next_eval(self) -> int:
        every = self.cfg.train.eval_every_env_steps
        return (self.state.env_steps // every + 1) * every if every else 0

    # ------------------------------------------------------------ the end

    def _start_evaluation(self, final: bool) -> tuple | None:
        """Launch an evaluation task (training goes on meanwhile): (ref, env steps, version), or None.

        Periodic evaluations take the latest published weights, the final one the last checkpoint.
        The task holds no CPU reservation (like the running actors), so it never waits for a CPU
        that a sweep's placement group has reserved.
        """
        if final:
            state = checkpoint.load(self.run_dir / "checkpoints")
            if state is None:
                raise RuntimeError(f"no checkpoint in {self.run_dir / 'checkpoints'} to evaluate")
            weights, version = state["model"], state["updates"]
        else:
            published = ray.get(self.store.newer_than.remote(-2))
            if published is None:  # the learner has not published its first weights yet
                self.log(f"eval at {self.state.env_steps} env steps skipped: no weights published yet")
                return None
            version, (weights,) = published  # an ObjectRef: the task receives the weights themselves
        ref = evaluation_task.options(num_cpus=0, num_gpus=self.cfg.cluster.actor_gpus if self.gpu else 0).remote(
            to_yaml(self.cfg), weights, version, episodes=self.cfg.train.eval_episodes,
            seed=10_000 + self.state.session, run=self.run_name, env_steps=self.state.env_steps,
            threads=self.process_threads, random_returns=self.random_returns)
        return ref, self.state.env_steps, version

    def _end_evaluation(self, ref, env_steps: int, version: int, final: bool = False) -> dict:
        """Write an evaluation's files and metrics (at the env steps it started at); a failed periodic one is logged."""
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:
            if final:
                raise
            self.log(f"eval at {env_steps} env steps failed: {error.__class__.__name__}: {str(error)[:300]}")
            return {}
        files = write_files(self.run_dir, result["files"])
        summary = result["summary"]
        self.random_returns = summary["random_returns"]  # same seed every time: play the random baseline once
        evaluation = {"eval/return_mean": summary["return_mean"], "eval/return_std": summary["return_std"],
                      "eval/random_return_mean": summary["random_return_mean"],
                      "eval/random_return_std": summary["random_return_std"], "eval/policy_version": version}
        self.metrics_log.write(env_steps, evaluation)
        self.collector.update({**evaluation, "eval/env_steps": env_steps})
        self.log(f"eval at {env_steps} env steps (weights v{version}): {describe(summary)}")
        return {**summary, "files": files}

    def _finish(self) -> dict:
        final = ray.get(self.learner.stop.remote())
        try:
            ray.get(self.train_ref, timeout=60)
        except ray.exceptions.RayError:
            pass
        evaluation = self._end_evaluation(*self._start_evaluation(final=True), final=True)
        summary = {"run_dir": str(self.run_dir), "env_steps": self.state.env_steps, "episodes": self.state.episodes,
                   "updates": int(final.get("learner/updates", 0)), "acknowledged_episodes": len(self.acknowledged),
                   **self._driver_metrics(), "eval": evaluation}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.log(f"done: {summary['env_steps']} env steps, {summary['episodes']} episodes, {summary['updates']} "
                 f"updates; eval return {evaluation['return_mean']:.1f} (random {evaluation['random_return_mean']:.1f})")
        self.log(f"results: {self.run_dir}/ (metrics.jsonl, checkpoints/latest.pt, eval/returns.json, "
                 f"eval/open_loop.gif, summary.json)")
        return summary

    def shutdown(self) -> None:
        for handle in getattr(self, "actors", []) + [getattr(self, "learner", None), getattr(self, "store", None)]:
            if handle is not None:
                ray.kill(handle)
        if getattr(self, "metrics_log", None):
            self.metrics_log.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if getattr(self, "replay", None):
            self.replay.close()
        if self._started_ray:
            ray.shutdown()
        if self.server is not None:
            self.server.stop()
