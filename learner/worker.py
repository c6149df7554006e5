"""The Learner's thin Ray wrapper: paces updates against replay, publishes weights, checkpoints.

``train()`` runs until ``stop()``: it waits for ``min_replay_steps``, then takes prefetched
batches as the samples-per-insert limiter allows (so updates per env step stay at PlaNet's
ratio whatever the number of actors), publishes weights every ``publish_every`` updates and
checkpoints every ``checkpoint_every`` updates. After a crash Ray restarts the actor, which
resumes from the latest checkpoint; the driver then calls ``train()`` again.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import ray
import torch

from common.config import from_yaml
from common.device import ThreadPacer, setup_process
from common.names import weight_store_name
from common.timing import Stopwatch
from learner import checkpoint
from learner.learner import Learner
from replay import REDIS_DOWN, Prefetcher, SamplesPerInsert
from replay.reconnect import open_replay

REDIS_WAIT_S = 300.0
"""How long a (re)starting learner waits for the replay's Redis before its constructor gives up."""

LEARNER_SECTIONS = ("update", "batch_wait", "publish", "checkpoint")
"""Where the learner's time goes (``learner/<section>_s``): gradient updates, waiting for a batch (the limiter holding
sampling back for the actors, or sampling slower than updates), putting weights in the object store, checkpoints."""


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=4)
class LearnerWorker:
    def __init__(self, config_yaml: str, action_size: int, discrete: bool, run_dir: str, run: str,
                 replay_url: str, threads: int = 1):
        self.cfg = from_yaml(config_yaml)
        # Device, threads and precision (a reserved GPU that CUDA cannot use fails here, in one line).
        self.placed = setup_process("learner", gpu_ids=ray.get_gpu_ids(), precision=self.cfg.train.precision,
                                    threads=threads)
        print(self.placed.describe(), flush=True)  # the worker's log
        self.learner = Learner(self.cfg, action_size, discrete=discrete, device=self.placed.device,
                               seed=self.cfg.train.seed, precision=self.placed.precision)
        self.checkpoints = Path(run_dir) / "checkpoints"
        # Loaded on the CPU and moved by load_state_dict; a damaged latest.pt falls back to the one before it
        # (the driver checked the same before launching, so this does not fail at start).
        state = checkpoint.load(self.checkpoints, check=self.learner.load_state_dict, warn=print)
        self.restored_updates = self.learner.updates if state is not None else -1
        self.reconnects = 0
        self.replay = open_replay(replay_url, run, wait_s=REDIS_WAIT_S)  # a restart may find Redis restarting too
        self.limiter = SamplesPerInsert.for_run(self.cfg, counters=self.replay)
        # While the limiter holds the actors back they wait for this learner, idle: on the CPU it then borrows
        # their cores (its share and theirs, at most the node's), and returns them once they may collect again.
        self.pacer = ThreadPacer(self.placed.threads, self.placed.threads if self.placed.on_gpu else
                                 min(os.cpu_count() or 1, threads * (self.cfg.cluster.actors + 1)))
        self.store = ray.get_actor(weight_store_name(run))
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while no train() loop runs
        self._idle.set()
        self._metrics: dict[str, float] = {}
        self._lock = threading.Lock()
        self._published = -1
        self.watch = Stopwatch(LEARNER_SECTIONS)
        self.publish()

    def pid(self) -> int:
        return os.getpid()

    def describe_device(self) -> str:
        """Where this learner computes (common/device.py), for the driver's log."""
        return self.placed.describe()

    def publish(self) -> int:
        """Put the weights into the object store once and hand the reference to the weight store."""
        version = self.learner.updates
        if version != self._published:
            with self.watch.section("publish"):
                ref = ray.put(self.learner.weights())
                ray.get(self.store.publish.remote(version, [ref]))
            self._published = version
        return version

    def save_checkpoint(self) -> str:
        with self.watch.section("checkpoint"):
            return str(checkpoint.save(self.checkpoints, self.learner.state_dict()))

    def train(self) -> dict[str, float]:
        """Update until stop(); returns the last metrics. Every update is paced by the limiter."""
        cfg = self.cfg.train
        prefetcher = None
        started, count = time.perf_counter(), 0
        self._idle.clear()
        try:
            while not self._stop.is_set():
                try:
                    if prefetcher is None:
                        prefetcher = Prefetcher(self.replay, cfg.batch_size, cfg.chunk_length,
                                                self.cfg.replay.prefetch_batches, limiter=self.limiter,
                                                seed=self.cfg.train.seed + self.learner.updates,
                                                transform=self.learner.stage).start()
                    try:
                        with self.watch.section("batch_wait"):
                            batch = prefetcher.get(timeout=0.5)
                    except TimeoutError:  # the limiter holds sampling back: actors have not inserted enough yet
                        continue
                    with self.watch.section("update"):
                        metrics = self.learner.update(batch)
                    count += 1
                    updates = self.learner.updates
                    counts = self.limiter.counters.counts()  # one Redis round trip for the pacer and the metrics
                    released = self.pacer.pace(held=not self.limiter.insert_allowed(*counts))
                    if updates % cfg.publish_every == 0 or released:
                        self.publish()  # and at once when the actors may collect again: they start on these
                    if updates % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    metrics["learner/updates_per_s"] = count / (time.perf_counter() - started)
                    metrics["learner/restored_updates"] = self.restored_updates
                    metrics["learner/policy_version"] = self._published
                    metrics["learner/threads"] = torch.get_num_threads()
                    metrics["learner/replay_reconnects"] = self.reconnects
                    metrics.update(self.limiter.metrics(counts))
                    metrics.update(prefetcher.metrics())
                    metrics.update(self.watch.metrics("learner"))
                    with self._lock:
                        self._metrics = metrics
                except REDIS_DOWN:  # Redis restarts: wait for it, then sample again
                    if prefetcher is not None:
                        prefetcher.stop()
                    prefetcher = None
                    self._wait_for_redis()
        finally:
            if prefetcher is not None:
                prefetcher.stop()
            self._idle.set()
        return self.metrics()

    def _wait_for_redis(self) -> None:
        """Wait until the replay's Redis answers again (or stop()); the replay's client reconnects by itself."""
        while not self._stop.is_set():
            try:
                self.replay.counts()
                self.reconnects += 1
                return
            except REDIS_DOWN:
                time.sleep(1.0)

    def stop(self) -> dict[str, float]:
        """End train() after the current update; publish and checkpoint the final weights."""
        self._stop.set()
        self._idle.wait(timeout=300)  # never read weights while an update writes them
        self.publish()
        self.save_checkpoint()
        return self.metrics()

    def metrics(self) -> dict[str, float]:
        with self._lock:
            metrics = dict(self._metrics)
        metrics.setdefault("learner/updates", self.learner.updates)
        metrics.setdefault("learner/restored_updates", self.restored_updates)
        return metrics
