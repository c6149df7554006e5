"""The sweep's scheduler: packs runs onto the Ray cluster, retries failed ones from their checkpoints, reports.

    sweeper = Sweeper(state, max_concurrent=3, max_retries=2, replay_url=url)
    sweeper.check_tasks()      # before Ray: every task's environment can be built
    sweeper.check_resources()  # before anything launches: some node (or node type) can hold a run
    rows = sweeper.run()       # until every run is done or out of retries; per-task summary rows

Each run gets a placement group (cluster/resources.py) named ``orrery-run-<run>``; once Ray has
reserved it the run's supervisor (cluster/supervisor.py) starts inside it. Runs whose groups wait
for room simply wait (an autoscaling cluster adds nodes for them), so runs are packed by what they
reserve, and ``max_concurrent`` caps how many groups are asked for at once. A run whose supervisor
raises or dies (its node lost, its process killed) is started again up to ``max_retries`` times,
continuing from its checkpoint and progress (``Driver(resume=True)``). Supervisors belong to the
sweep's driver, so if that process dies Ray ends its runs too; ``orrery sweep --resume SWEEP_DIR``
then continues every unfinished run from its checkpoint. Ctrl-C or SIGTERM stops all runs with
final checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster import resources
from cluster.ledger import PROGRESS
from cluster.supervisor import RunSupervisor
from cluster.report import ReportError, write_report
from cluster.sweep import RunSpec, SweepError, SweepState, format_summary, summarise, write_summary
from common.config import to_yaml
from common.envs import make_env_from_config

GROUP_PREFIX = "orrery-run-"
"""Placement groups are named GROUP_PREFIX + run name (``ray list placement-groups`` shows which is which)."""


@dataclass
class Active:
    """A run that holds (or waits for) its placement group."""

    run: RunSpec
    bundles: list[dict[str, float]]
    group: PlacementGroup
    ready: ray.ObjectRef
    started: float = field(default_factory=time.monotonic)
    supervisor: object = None
    result: ray.ObjectRef | None = None


class Sweeper:
    def __init__(self, state: SweepState, *, max_concurrent: int = 0, max_retries: int = 2, replay_url: str = "",
                 log: Callable[[str], None] = print, status_every_s: float = 30.0):
        """``max_concurrent``: runs holding or asking for resources at once (0: every run; resources decide);
        ``replay_url``: the cluster Redis all runs share (each in its own namespace); empty: one embedded each."""
        if state.spec.cluster_replay and not replay_url:
            raise SweepError(f"{state.sweep_dir} ran its runs on a cluster Redis: pass its URL with --redis "
                             f"(cluster/submit.py adds it on a cluster)")
        self.state, self.max_retries, self.log, self.status_every_s = state, max_retries, log, status_every_s
        self.runs = {run.name: run for run in state.plan()}
        self.max_concurrent = max_concurrent or len(self.runs)
        self.configs = {name: run.config(state.spec.preset, replay_url) for name, run in self.runs.items()}
        self.failures = {name: 0 for name in self.runs}
        self.active: dict[str, Active] = {}

    # ------------------------------------------------------------ before launching

    def check_tasks(self) -> None:
        """Build each task's environment once: an unknown task fails here (UnknownTaskError names what exists)."""
        for task in dict.fromkeys(run.task for run in self.runs.values()):
            cfg = next(self.configs[name] for name, run in self.runs.items() if run.task == task)
            make_env_from_config(cfg.env, 0).close()

    def check_resources(self) -> None:
        """Refuse runs that no node present or that the autoscaler may start could ever hold (ResourceError)."""
        shapes = self._shapes()
        for cfg in {cfg.cluster: cfg for cfg in self.configs.values()}.values():
            resources.check_feasible(resources.run_bundles(cfg, shapes), resources.strategy(cfg), shapes)

    def per_run_cpus(self) -> float:
        """CPUs one run reserves on a cluster without driver slots (a local Ray is started with room for it)."""
        return max(resources.total(resources.run_bundles(cfg, [])).get("CPU", 0.0) for cfg in self.configs.values())

    def _shapes(self) -> list[resources.NodeShape]:
        return resources.node_shapes(ray.nodes(), resources.load_autoscaler_config())

    # ------------------------------------------------------------ the loop

    def run(self) -> list[dict]:
        queue = [name for name, run in self.state.runs.items() if run["state"] != "done"]
        for name in queue:
            self.state.mark(name, state="queued")
        self.log(f"orrery sweep: {len(self.runs)} run(s) in {self.state.sweep_dir} ({len(queue)} to go); at most "
                 f"{self.max_concurrent} at once, each retried up to {self.max_retries} time(s)")
        last_status = time.monotonic()
        try:
            while queue or self.active:
                while queue and len(self.active) < self.max_concurrent:
                    self._launch(queue.pop(0))
                waiting = {a.ready: name for name, a in self.active.items() if a.supervisor is None}
                running = {a.result: name for name, a in self.active.items() if a.result is not None}
                ready, _ = ray.wait(list(waiting) + list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in waiting:
                        self._start(waiting[ref])
                    else:
                        queue += self._collect(running[ref])
                if time.monotonic() - last_status > self.status_every_s:
                    self.log(self.status_line())
                    last_status = time.monotonic()
        except KeyboardInterrupt:
            self._stop_all()
            raise
        return summarise(self.state)

    def _launch(self, name: str) -> None:
        cfg = self.configs[name]
        bundles = resources.run_bundles(cfg, self._shapes())
        group = placement_group(bundles, strategy=resources.strategy(cfg), name=GROUP_PREFIX + name)
        self.active[name] = Active(self.runs[name], bundles, group, group.ready())

    def _start(self, name: str) -> None:
        active = self.active[name]
        run_dir = self.state.run_dir(name)
        resume = (run_dir / PROGRESS).exists()
        bundle = active.bundles[resources.bundle_index("store", 0)]

        # Child tasks are not captured: the learner, actors and weight store are pinned to their bundles by
        # the supervisor; anything else the Driver starts (evaluation tasks, no CPU reserved, a GPU share
        # where actors have one) schedules on the cluster at large rather than wait for a bundle's GPU.
        active.supervisor = RunSupervisor.options(
            num_cpus=bundle.get("CPU", 0), resources={k: v for k, v in bundle.items() if k != "CPU"},
            scheduling_strategy=PlacementGroupSchedulingStrategy(active.group, placement_group_bundle_index=0),
        ).remote(to_yaml(self.configs[name]), str(run_dir), resume, self.state.spec.preset, active.group)
        active.result = active.supervisor.run.remote()
        attempt = self.state.runs[name]["attempts"] + 1
        self.state.mark(name, state="running", attempts=attempt)
        self.log(f"{name}: started (attempt {attempt}{', resuming from its checkpoint' if resume else ''}; "
                 f"waited {time.monotonic() - active.started:.0f} s for resources)")

    def _collect(self, name: str) -> list[str]:
        """A run's supervisor returned or failed; returns [name] when the run goes back into the queue."""
        active = self.active.pop(name)
        try:
            summary = ray.get(active.result)
        except (ray.exceptions.RayError, OSError) as error:
            summary, reason = None, _reason(error)
        finally:
            remove_placement_group(active.group)
        if summary is not None and summary.get("stopped"):
            self.state.mark(name, state="stopped")
            return []
        if summary is not None:
            evaluation = summary.get("eval", {})
            self.state.mark(name, state="done", error=None, env_steps=summary["env_steps"],
                            return_mean=evaluation.get("return_mean"))
            self.log(f"{name}: done, {summary['env_steps']} env steps, eval return "
                     f"{evaluation.get('return_mean', float('nan')):.1f}")
            return []
        self.failures[name] += 1
        if self.failures[name] > self.max_retries:
            self.state.mark(name, state="failed", error=reason)
            self.log(f"{name}: failed ({reason}); no retries left")
            return []
        self.state.mark(name, state="queued", error=reason)
        self.log(f"{name}: failed ({reason}); retry {self.failures[name]}/{self.max_retries} from its checkpoint")
        return [name]

    def _stop_all(self) -> None:
        """Ctrl-C / SIGTERM: every running run stops with a final checkpoint; a later --resume continues them."""
        self.log(f"stopping {len(self.active)} run(s) with final checkpoints (Ctrl-C again to abandon them)")
        refs = []
        for active in self.active.values():
            if active.supervisor is not None:
                active.supervisor.stop.remote()
                refs.append(active.result)
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=300)
        for name, active in self.active.items():
            remove_placement_group(active.group)
            self.state.mark(name, state="stopped")
        self.active.clear()

    def status_line(self) -> str:
        parts = []
        for name, active in self.active.items():
            if active.supervisor is None:
                parts.append(f"{name} waiting for resources")
                continue
            try:
                steps = json.loads((self.state.run_dir(name) / PROGRESS).read_text())["env_steps"]
            except (OSError, ValueError, KeyError):
                steps = 0
            parts.append(f"{name} {steps}/{self.configs[name].train.budget_env_steps}")
        counts = {s: self.state.count(s) for s in ("done", "failed", "queued")}
        return (f"sweep: {counts['done']} done, {counts['failed']} failed, {counts['queued']} queued"
                + (f" | {'; '.join(parts)}" if parts else ""))


def _reason(error: BaseException) -> str:
    """One line on why a run failed: the actor died, or the first line of the run's own exception."""
    if isinstance(error, ray.exceptions.RayActorError):
        return "its driver process died"
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


NAMESPACE = "orrery"
"""The Ray namespace of a sweep's driver and everything it starts."""


def run_sweep(state: SweepState, *, max_concurrent: int = 0, max_retries: int = 2, replay_url: str = "",
              address: str | None = None, log: Callable[[str], None] = print) -> int:
    """``orrery sweep`` once its arguments are parsed: checks, Ray, the runs, then summary and report; the exit code.

    ``address``: a Ray cluster to join; by default the job's cluster under ``ray job submit``
    (RAY_ADDRESS), else a local Ray with logical CPUs for ``max_concurrent`` runs (at least one).
    """
    sweeper = Sweeper(state, max_concurrent=max_concurrent, max_retries=max_retries, replay_url=replay_url, log=log)
    sweeper.check_tasks()
    address = address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    elif started:
        cfg = next(iter(sweeper.configs.values()))
        ray.init(namespace=NAMESPACE, log_to_driver=False, include_dashboard=cfg.cluster.dashboard,
                 num_cpus=max(os.cpu_count() or 1, math.ceil(sweeper.per_run_cpus() * max(1, max_concurrent))))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `ray job stop`: stop the runs cleanly
    try:
        sweeper.check_resources()
        try:
            rows = sweeper.run()
        except KeyboardInterrupt:
            log(f"orrery sweep: interrupted; runs keep their checkpoints; continue with --resume {state.sweep_dir}")
            return 130
    finally:
        if started:
            ray.shutdown()
    log(format_summary(rows))
    log(f"summary: {write_summary(state, rows)}")
    done = [state.run_dir(name) for name, run in state.runs.items() if run["state"] == "done"]
    if done:
        try:
            page, _ = write_report(done, state.sweep_dir)
            log(f"report: {page}")
        except ReportError as error:
            log(f"no report: {error}")
    failed = [name for name, run in state.runs.items() if run["state"] == "failed"]
    if failed:
        log(f"{len(failed)} run(s) failed after {max_retries} retries: {', '.join(failed)} (see their driver.log); "
            f"--resume {state.sweep_dir} tries them again")
    return 1 if failed else 0
