"""A sweep run's driver as a Ray actor: runs one :class:`cluster.driver.Driver` inside the run's placement group.

    supervisor = RunSupervisor.options(scheduling_strategy=...bundle 0...).remote(config_yaml, run_dir, resume,
                                                                               preset, group)
    summary = ray.get(supervisor.run.remote())     # the Driver's summary; raises if the run failed
    supervisor.stop.remote()                       # stop early: final checkpoint, clean shutdown

Why a driver per run inside the cluster rather than all runs in the sweep's process: each run keeps
the Driver it has under ``orrery train`` (budget, faults, evaluation, metrics endpoint), a run that
crashes takes only itself down, and the sweep just waits on one call per run. The Driver sees
Ray already initialised and so neither starts nor stops it; ``run()`` executes on a thread of
this actor (max_concurrency=2, so ``stop()`` can arrive meanwhile), where the Driver installs no
SIGTERM handler and leaves the worker's own alone. ``placement`` puts the learner, each actor and
the weight store on their own bundle (cluster/resources.py), so a GPU bundle goes to the learner
and no other process can take it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.driver import Driver
from cluster.resources import PROCESS_CPUS, bundle_index
from common.config import from_yaml


CLAIM_WAIT_S = 120.0
"""How long a retried run waits for its lock (NFSv4 releases a lost client's locks after its lease, ~90 s)."""


@ray.remote(max_restarts=0, max_concurrency=2)
class RunSupervisor:
    def __init__(self, config_yaml: str, run_dir: str, resume: bool, preset: str, group):
        self.cfg = from_yaml(config_yaml)
        self.run_dir, self.resume, self.preset, self.group = Path(run_dir), resume, preset, group
        self._stop = threading.Event()
        self._log = None

    def run(self) -> dict:
        """Drive the run to its budget and evaluation; returns the Driver's summary (``stopped`` if stop() came)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.run_dir / "driver.log", "a", buffering=1)
        try:
            # An earlier attempt's leftovers (its embedded Redis) are stopped by the Driver once it holds the
            # run's lock; on a shared disk the lock of a lost node is released when its lease runs out.
            driver = Driver(self.cfg, self.run_dir, resume=self.resume, log=self.log, show_progress=False,
                            preset=self.preset, placement=self.placement, threads=max(1, int(PROCESS_CPUS)),
                            claim_wait_s=CLAIM_WAIT_S)
            try:
                return driver.run(on_tick=self._check_stop)
            except KeyboardInterrupt:  # raised by _check_stop: the Driver saved a final checkpoint and shut down
                return {"stopped": True, "env_steps": driver.state.env_steps}
        finally:
            log, self._log = self._log, None
            log.close()

    def stop(self) -> None:
        """Ask the run to stop at its next tick (within about a second), with a final checkpoint."""
        self._stop.set()

    def placement(self, role: str, index: int) -> dict:
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=bundle_index(role, index))}

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def _check_stop(self, driver: Driver) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt  # the Driver's Ctrl-C path: final checkpoint, then shutdown
