"""The run driver: checks, starts replay, learner, weight store and actors on Ray, watches the budget, shuts down.

    driver = Driver(cfg, run_dir)          # resume=True continues a run from its checkpoint and replay
    summary = driver.run()                 # blocks until the env-step budget is spent, then evaluates

The driver is the conductor; each part it conducts lives in its own module:

    cluster/preflight.py   checks before anything starts (run directory, checkpoint): nothing is written until
                           they pass
    cluster/processes.py   Ray, the embedded Redis and the run's lock: started here, always stopped on the way out
    cluster/ledger.py      counts, progress.json, the summary, the evaluation schedule (pure, no Ray)
    cluster/telemetry.py   metrics.jsonl, the Prometheus endpoint, the status line

Faults it rides out: an actor or learner process that dies is restarted by Ray and called again
(a learner from its checkpoint); the embedded Redis is restarted on its append-only file when it
stops (first thing every tick, before anyone is blamed for its absence), and learner and actors
wait for it. What it does not ride out is reported in one line (RunError): a learner or actor that
cannot even be constructed, a learner that keeps dying before its first update.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Callable

import ray

from actors.evaluator import describe, verdict, write_files
from actors.worker import ActorWorker, evaluation_task
from cluster import resources
from cluster.exporter import registration_dir
from cluster.ledger import LEARNER_GIVE_UP, SUMMARY, EvalSchedule, RunLedger
from cluster.preflight import RunDirError, check_run_dir, verify_checkpoint
from cluster.processes import RunProcesses
from cluster.telemetry import Telemetry
from cluster.weight_store import WeightStore
from common.config import Config, redacted, to_yaml
from common.envs import make_env_from_config
from common.fileio import write_atomic
from common.names import weight_store_name
from learner import checkpoint
from learner.worker import LearnerWorker
from replay import REDIS_DOWN, ReplaySpec, SequenceReplay

Placement = Callable[[str, int], dict]


class RunError(RuntimeError):
    """The run cannot go on; the message says why in one line."""


class Driver:
    def __init__(self, cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False,
                 log: Callable[[str], None] = print, show_progress: bool = True, preset: str = "",
                 placement: Placement | None = None, threads: int | None = None, claim_wait_s: float = 0.0):
        """``log`` receives the driver's messages; ``show_progress`` prints the status line to stdout;
        ``preset`` (the preset names the config came from; a resumed run keeps its own) labels the run's
        metrics; ``placement(role, index)`` gives extra Ray options for the "store", "learner" and each
        "actor" (a sweep pins them to the bundles of the run's placement group, cluster/supervisor.py);
        ``threads``: torch threads per learner and actor process (default: this node's cores shared among
        the run's processes); ``claim_wait_s``: how long to wait for the run's lock (cluster/processes.py).

        Checks the run directory and reads its progress; starts and writes nothing (``run`` does).
        """
        self.cfg, self.run_dir, self.resume, self.log = cfg, Path(run_dir), resume, log
        self.run_name = self.run_dir.name
        check_run_dir(self.run_dir, resume=resume)
        self.ledger = RunLedger.open(self.run_dir, cfg, resume=resume)
        self.preset = preset or self.ledger.state.preset
        self.ledger.state.preset = self.preset
        self.placement = placement
        self.threads = threads
        self.show_progress = show_progress
        self.processes = RunProcesses(self.run_dir, log=log, claim_wait_s=claim_wait_s)
        self.telemetry: Telemetry | None = None
        self.store = self.learner = None
        self.actors: list = []
        self.learner_metrics: dict = {}
        self.random_returns: list[float] | None = None  # played once per run (same seed every time)
        self.evaluating: tuple | None = None  # (task ref, env steps, weight version) of the evaluation in flight
        self.learner_back = None  # after a learner death: resolves once Ray has restarted it
        self.described: set = set()  # actors (and the evaluation) whose device line was logged
        self.shares = resources.GpuShares()

    @property
    def state(self):
        """The run's counts (env steps, episodes, session): :class:`cluster.ledger.RunState`."""
        return self.ledger.state

    @property
    def server(self):
        """The embedded Redis (None with a cluster Redis)."""
        return self.processes.redis

    # ------------------------------------------------------------ the whole run

    def run(self, on_tick: Callable[[Driver], None] | None = None) -> dict:
        """Train until the budget is spent, then evaluate; ``on_tick(driver)`` runs about once a second."""
        with self.processes:  # whatever was started is stopped again, however this ends
            try:
                self._start()
                self._loop(on_tick)
                return self._finish()
            except KeyboardInterrupt:
                if self.learner is not None:
                    self.log("interrupted: saving the learner's final checkpoint (Ctrl-C again to abandon it)")
                    try:
                        ray.get(self.learner.stop.remote(), timeout=300)
                    except ray.exceptions.RayError as error:
                        self.log(f"no final checkpoint ({error.__class__.__name__}); the last periodic one stays")
                raise
            finally:
                self._stop_workers()

    # ------------------------------------------------------------ start

    def _start(self) -> None:
        cfg = self.cfg
        probe = make_env_from_config(cfg.env, cfg.train.seed)  # fails fast on an unknown task or a broken renderer
        self.spec = probe.spec
        probe.close()
        if cfg.cluster.metrics_port >= 0:
            registration_dir()  # an unsafe ORRERY_HOME is refused before anything starts (UnsafePathError)
        restored = None
        if self.resume:
            restored = verify_checkpoint(self.run_dir, cfg, self.spec, warn=self.log)
            self.processes.claim()  # a live driver of this run is refused before Ray starts
        self.processes.start_ray(cfg, cpus=cfg.cluster.actors + 1)
        placement = self.placement or self._default_placement()
        shapes = resources.node_shapes(ray.nodes(), resources.load_autoscaler_config())  # up, and to come
        if self.placement is None:
            self._check_resources(shapes)
        self.processes.claim()
        url = self.processes.start_replay(cfg)
        self.replay = SequenceReplay(url, self.run_name, capacity_steps=cfg.replay.capacity_steps,
                                     spec=ReplaySpec.for_env(self.spec))
        if not self.resume and self.replay.stats().get("replay/inserts", 0):
            raise RunDirError(f"the replay already holds episodes of a run named {self.run_name!r} (namespace "
                              f"{self.replay.prefix}); a new run needs a name of its own: choose another --run-dir")
        # Every check has passed: from here on the run exists on disk.
        # What is saved and what workers get: the replay URL (password included) travels apart from it.
        self.config_yaml = to_yaml(redacted(cfg))
        write_atomic(self.run_dir / "config.yaml", self.config_yaml)
        self.ledger.save(self.run_dir)
        self.processes.record()
        self.processes.commit()
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a scheduler, `ray job stop`, kill) stops the run as cleanly as Ctrl-C; set after
            # ray.init, which installs a handler of its own that would exit without a checkpoint.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        self.telemetry = Telemetry(self.run_dir, cfg, self.preset, self.ledger, log=self.log,
                                   show_progress=self.show_progress)
        self.log(f"orrery train: run {self.run_name} in {self.run_dir} | {cfg.env.task} | {cfg.cluster.actors} actor(s) "
                 f"x {cfg.cluster.envs_per_actor} env(s) | budget {cfg.train.budget_env_steps} env steps"
                 + (f" | resumed at {self.state.env_steps} env steps"
                    f"{'' if restored is None else f', checkpoint of {restored} updates'}" if self.resume else ""))
        self.telemetry.open()
        if self.processes.dashboard_url:
            self.log(f"Ray dashboard: {self.processes.dashboard_url}")
        self._launch(url, placement, shapes)

    def _launch(self, url: str, placement: Placement, shapes: list) -> None:
        cfg = self.cfg
        config_yaml = self.config_yaml
        threads = self.process_threads = self.threads or max(1, (os.cpu_count() or 1) // (cfg.cluster.actors + 1))
        shares = self.shares = resources.gpu_shares(cfg, resources.most_gpus(shapes))
        self.log(f"processes: {shares.describe(cfg.cluster.actors)}")
        cpus = {} if self.placement else {"num_cpus": resources.PROCESS_CPUS}  # a sweep's bundles hold them
        self.store = WeightStore.options(name=weight_store_name(self.run_name), **placement("store", 0)).remote()
        # The learner reads ~1 GB/s of batches on a GPU: from the embedded Redis over its Unix socket (same node;
        # only this user can open it), or over loopback TCP where no socket could be made (cluster/processes.py).
        self.learner = LearnerWorker.options(num_gpus=shares.learner, **cpus, **placement("learner", 0)).remote(
            config_yaml, self.spec.action.size, self.spec.action.discrete, str(self.run_dir), self.run_name,
            self.processes.local_url or url, threads)
        self._wait_placed(self.learner, "the learner")  # first: actors that took its room would collect for nothing
        self.log(ray.get(self.learner.describe_device.remote()))
        seeds_left = cfg.train.seed_episodes if self.state.session == 0 else 0
        seeds = [seeds_left // cfg.cluster.actors + (i < seeds_left % cfg.cluster.actors)
                  for i in range(cfg.cluster.actors)]
        self.actors = [ActorWorker.options(num_gpus=shares.actor, **cpus, **placement("actor", i)).remote(
            config_yaml, i, self.run_name, self.state.session, url, seeds[i], threads)
            for i in range(cfg.cluster.actors)]
        # Resolves once Ray has placed the actor: one never placed is never waited for (see _loop).
        self.placed = [actor.__ray_ready__.remote() for actor in self.actors]

    def _wait_placed(self, handle, what: str, every_s: float = 30.0) -> None:
        """Block until Ray has placed (and constructed) ``handle``, saying so every ``every_s`` seconds."""
        ready, waited = handle.__ray_ready__.remote(), 0.0
        while not ray.wait([ready], timeout=every_s)[0]:
            waited += every_s
            self.log(f"waiting {waited:.0f} s for Ray to place {what} (the cluster has "
                     f"{resources.describe(ray.available_resources())} free)")
        try:
            ray.get(ready)
        except ray.exceptions.RayActorError as error:
            raise RunError(f"{what} cannot start: {_why(error)}") from None

    def _default_placement(self) -> Placement:
        """With an embedded (loopback) Redis on a multi-node cluster every process must run on this node."""
        if self.cfg.replay.url or len([node for node in ray.nodes() if node.get("Alive")]) <= 1:
            return lambda role, index: {}
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        return lambda role, index: {"scheduling_strategy": strategy}

    def _check_resources(self, shapes: list) -> None:
        """Refuse a run the cluster can never hold, before anything launches; say so when it must wait for room.

        ``shapes``: the nodes that are up and those the autoscaler may start (cluster/resources.py)."""
        bundles = resources.run_bundles(self.cfg, shapes)[1:]  # the learner, each actor, an evaluation (not this driver)
        if self.cfg.replay.url:
            resources.check_feasible(bundles, "PACK", shapes, actors_flag="--actors")
        else:  # its processes share this node with the embedded Redis
            node_id = ray.get_runtime_context().get_node_id()
            here = [resources.NodeShape("this node", dict(node["Resources"])) for node in ray.nodes()
                    if node.get("NodeID") == node_id]
            resources.check_feasible(bundles, "STRICT_PACK", here, actors_flag="--actors", where="this node")
        need, free = resources.total(bundles), ray.available_resources()
        if not resources.fits(need, free):
            self.log(f"the run needs {resources.describe(need)}, the cluster has {resources.describe(free)} free: "
                     f"its processes wait until Ray can place them")

    # ------------------------------------------------------------ the loop

    def _loop(self, on_tick) -> None:
        cfg, ledger = self.cfg, self.ledger
        self.train_ref = self.learner.train.remote()
        # ref -> ("collect", actor): its collect() call; ("back", actor): the wait for a restarting actor to answer
        inflight = {self._call("collect", i): ("collect", i) for i in range(len(self.actors))} \
            if not ledger.budget_spent else {}
        metrics_ref = None
        schedule = EvalSchedule(cfg.train.eval_every_env_steps, ledger.state.env_steps, cfg.train.budget_env_steps)
        while inflight:
            if self.processes.keep_replay_up():  # first: learner and actors are waiting for it
                ledger.redis_restarted()
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                kind, index = inflight.pop(ref)
                then = self._collected(index, ref) if kind == "collect" else self._returned(index, ref)
                if not ledger.budget_spent:
                    inflight[self._call(then, index)] = (then, index)
            if ledger.budget_spent:
                self._forget_unplaced(inflight)
            self._watch_learner()
            if metrics_ref is not None and ray.wait([metrics_ref], timeout=0)[0]:
                try:
                    self.learner_metrics = ray.get(metrics_ref)
                except ray.exceptions.RayActorError:
                    pass
                metrics_ref = None
            if metrics_ref is None:
                metrics_ref = self.learner.metrics.remote()
            self.telemetry.tick(self.learner_metrics, self._replay_stats())
            if self.evaluating is not None and ray.wait([self.evaluating[0]], timeout=0)[0]:
                self._end_evaluation(*self.evaluating)
                self.evaluating = None
            if schedule.due(ledger.state.env_steps, busy=self.evaluating is not None):
                self.evaluating = self._start_evaluation(final=False)
                schedule.started(ledger.state.env_steps)
            if on_tick is not None:
                on_tick(self)
        self.telemetry.status(self.learner_metrics, self._replay_stats(), force=True)
        if self.evaluating is not None:
            self._end_evaluation(*self.evaluating)
            self.evaluating = None

    def _call(self, kind: str, index: int):
        """Actor ``index``'s next call: "collect" episodes, or wait until a restarting actor answers ("back")."""
        if kind == "back":  # retried by Ray while the actor restarts (a plain call would fail at once)
            return self.actors[index].pid.options(max_task_retries=-1).remote()
        return self.actors[index].collect.remote(self.cfg.cluster.envs_per_actor, self.ledger.incarnation[index])

    def _collected(self, index: int, ref) -> str:
        """Count a finished collect() call; returns what to call next (an actor that died: wait for its restart)."""
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            if error.actor_init_failed:
                raise RunError(f"actor {index} cannot start: {_why(error)}") from None
            incarnation = self.ledger.actor_lost(index)
            self.log(f"actor {index} died; Ray restarts it (incarnation {incarnation})")
            self.telemetry.episodes([], index)
            return "back"
        except ray.exceptions.RayTaskError as error:
            if not isinstance(_cause(error), REDIS_DOWN):  # a bug, or a device that cannot run the model
                raise RunError(f"actor {index} failed: {_why(error)}; its traceback is in the worker's log under "
                               f"Ray's session directory") from None
            incarnation = self.ledger.actor_lost(index)
            self.log(f"actor {index} lost its episodes: the replay stayed unreachable ({_why(error)}); calling it "
                     f"again (incarnation {incarnation})")
            self.telemetry.episodes([], index)
            return "collect"
        if result.get("device") and index not in self.described:
            self.described.add(index)
            self.log(result["device"])  # where it plans, once per actor
        self.telemetry.episodes(self.ledger.record(index, result), index)
        self.ledger.save(self.run_dir)
        return "collect"

    def _returned(self, index: int, ref) -> str:
        """A restarted actor answers again (or cannot start: RunError)."""
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as error:
            raise RunError(f"actor {index} cannot start again after dying: {_why(error)}") from None
        return "collect"

    def _forget_unplaced(self, inflight: dict) -> None:
        """The budget is spent: an actor Ray never placed (no room on the cluster), or one still restarting, has
        nothing to finish."""
        for ref, (kind, index) in list(inflight.items()):
            if kind == "back":
                del inflight[ref]
            elif not ray.wait([self.placed[index]], timeout=0)[0]:
                del inflight[ref]
                ray.kill(self.actors[index])
                self.log(f"actor {index} was never placed (the cluster had no room for it); not waiting for it")

    def _watch_learner(self) -> None:
        """A learner whose train() ended by dying is restarted by Ray from its checkpoint: once it answers again,
        call train() again."""
        if self.learner_back is not None:
            if not ray.wait([self.learner_back], timeout=0)[0]:
                return
            try:
                ray.get(self.learner_back)
            except ray.exceptions.RayActorError as error:
                raise RunError(f"the learner cannot start again after dying: {_why(error)}") from None
            self.learner_back = None
            self.train_ref = self.learner.train.remote()
            return
        if not ray.wait([self.train_ref], timeout=0)[0]:
            return
        try:
            ray.get(self.train_ref)
        except ray.exceptions.RayActorError as error:
            if error.actor_init_failed:
                raise RunError(f"the learner cannot start: {_why(error)}") from None
            if self.ledger.learner_died(int(self.learner_metrics.get("learner/updates", -1))):
                raise RunError(f"the learner died {LEARNER_GIVE_UP} times in a row without completing an update "
                               f"({_why(error)}); see its log under Ray's session directory") from None
            self.log("learner died; Ray restarts it from its last checkpoint")
            self.learner_back = self.learner.pid.options(max_task_retries=-1).remote()  # answers once it is back
            return
        except ray.exceptions.RayTaskError as error:
            if not isinstance(_cause(error), REDIS_DOWN):
                raise  # any other error of train() is a bug, not a fault to ride out
            self.log(f"the learner lost the replay ({_why(error)}); calling it again")
        self.train_ref = self.learner.train.remote()

    def _replay_stats(self) -> dict:
        """replay/* metrics; nothing this tick while Redis is down (it is restarted at the next tick's start)."""
        try:
            return self.replay.stats()
        except REDIS_DOWN:
            return {}

    # ------------------------------------------------------------ evaluation and the end

    def _start_evaluation(self, final: bool) -> tuple | None:
        """Launch an evaluation task (training goes on meanwhile): (ref, env steps, version), or None.

        Periodic evaluations take the latest published weights, the final one the last checkpoint.
        The task holds no CPU reservation (like the running actors), so it never waits for a CPU
        that a sweep's placement group has reserved. Its GPU share was reserved beside the actors'
        where evaluations run during training (cluster/resources.py); the final one runs after the
        actors have stopped, in the room they leave.
        """
        if final:
            state = checkpoint.load(self.run_dir / "checkpoints", warn=self.log)
            if state is None:
                raise RunError(f"no checkpoint in {self.run_dir / 'checkpoints'} to evaluate")
            weights, version = state["model"], state["updates"]
        else:
            published = ray.get(self.store.newer_than.remote(-2))
            if published is None:  # the learner has not published its first weights yet
                self.log(f"eval at {self.state.env_steps} env steps skipped: no weights published yet")
                return None
            version, (weights,) = published  # an ObjectRef: the task receives the weights themselves
        where = self.placement("evaluation", 0) if self.placement and self.shares.evaluation > 0 else {}
        ref = evaluation_task.options(num_cpus=0, num_gpus=self.shares.evaluation, **where).remote(
            self.config_yaml, weights, version, episodes=self.cfg.train.eval_episodes,
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
            self.log(f"eval at {env_steps} env steps failed: {_why(error)}")
            return {}
        if result.get("device") and "evaluation" not in self.described:
            self.described.add("evaluation")
            self.log(result["device"])
        files = write_files(self.run_dir, result["files"])
        summary = result["summary"]
        self.random_returns = summary["random_returns"]  # same seed every time: play the random baseline once
        self.telemetry.evaluation(env_steps, {
            "eval/return_mean": summary["return_mean"], "eval/return_std": summary["return_std"],
            "eval/random_return_mean": summary["random_return_mean"],
            "eval/random_return_std": summary["random_return_std"], "eval/policy_version": version,
            "eval/seconds": summary.get("seconds", 0.0)})
        self.log(f"eval at {env_steps} env steps (weights v{version}): {describe(summary)}")
        return {**summary, "files": files}

    def _finish(self) -> dict:
        final = ray.get(self.learner.stop.options(max_task_retries=-1).remote())  # (waits out a learner restart)
        try:
            ray.get(self.train_ref, timeout=60)
        except ray.exceptions.RayError:
            pass
        for actor in self.actors:  # done collecting: the final evaluation takes the room (GPU share) they held
            ray.kill(actor)
        evaluation = self._end_evaluation(*self._start_evaluation(final=True), final=True)
        summary = self.ledger.summary(self.run_dir, final.get("learner/updates", 0), evaluation,
                                      self.telemetry.started_at)
        write_atomic(self.run_dir / SUMMARY, json.dumps(summary, indent=2))
        self.log(f"done: {summary['env_steps']} env steps, {summary['episodes']} episodes, {summary['updates']} "
                 f"updates; eval return {evaluation['return_mean']:.1f} (random {evaluation['random_return_mean']:.1f})")
        self.log(verdict(evaluation))
        self.log(f"results: {self.run_dir}/ (metrics.jsonl, checkpoints/latest.pt, eval/returns.json, "
                 f"eval/open_loop.gif, summary.json)")
        return summary

    def _stop_workers(self) -> None:
        if ray.is_initialized():
            for handle in [*self.actors, self.learner, self.store]:
                if handle is not None:
                    ray.kill(handle)
        if self.telemetry is not None:
            self.telemetry.close()
        replay = getattr(self, "replay", None)
        if replay is not None:
            replay.close()


def _cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised (RayTaskError carries it as ``cause``)."""
    return getattr(error, "cause", None) or error


def _why(error: BaseException, limit: int = 300) -> str:
    """One line on why a Ray call failed: the last ``Type: message`` line of its cause, bounded."""
    cause = _cause(error)
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    described = [line for line in lines if ":" in line and line.split(":")[0].replace(".", "").isidentifier()]
    text = described[-1] if described else (lines[-1] if lines else type(cause).__name__)
    if not described and not text.startswith(type(cause).__name__):
        text = f"{type(cause).__name__}: {text}"
    return text[:limit]
