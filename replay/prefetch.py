"""Prefetcher: background threads keep a few sampled batches ready, so the learner never waits on Redis.

    with Prefetcher(replay, batch=50, length=50, depth=4, limiter=limiter) as batches:
        for _ in range(updates):
            metrics = learner.update(batches.get())

Fetching is mostly socket reads that release the GIL, so the threads overlap with the
learner's compute. A worker's exception (a lost server, a replay with no chunk of length L)
is raised by the next ``get`` in the consumer, chained to the original: a connection-class
failure (anything in ``REDIS_DOWN``: Redis restarting, loading, unreachable) as
ReplayConnectionError, so that a learner catching REDIS_DOWN can wait for the server and start
a new Prefetcher; anything else as ReplayError. Sampling an empty replay is such an error:
pass a limiter, whose ``min_size`` makes the workers wait for data.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from replay.errors import REDIS_DOWN, LimiterTimeout, ReplayConnectionError, ReplayError, bounded
from replay.limiter import SamplesPerInsert
from replay.store import SequenceReplay

_POLL = 0.1  # seconds between checks of the stop flag while blocked


_WAKE = object()  # put by a failing worker to wake the consumer


class Prefetcher:
    """``depth`` batches of (B, L) chunks sampled ahead by ``workers`` threads; stoppable."""

    def __init__(self, replay: SequenceReplay, batch: int, length: int, depth: int = 4, *,
                 limiter: SamplesPerInsert | None = None, workers: int = 1, seed: int | None = None,
                 transform: Callable[[dict], Any] | None = None):
        """``limiter``: each batch waits for ``limiter.wait_sample()`` first (and is recorded with it).
        ``workers`` threads sample concurrently, each through its own connection. ``transform``: applied
        to each batch on the worker thread before it is queued (the learner pins it there for an
        asynchronous copy to the GPU: ``Learner.stage``)."""
        if depth < 1 or workers < 1:
            raise ValueError(f"Prefetcher needs depth >= 1 and workers >= 1, got depth={depth}, workers={workers}")
        self.replay, self.batch, self.length = replay, batch, length
        self.limiter = limiter
        self.transform = transform
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        seeds = np.random.SeedSequence(seed).spawn(workers)
        self._threads = [threading.Thread(target=self._work, args=(np.random.default_rng(s),),
                                          name=f"replay-prefetch-{i}", daemon=True) for i, s in enumerate(seeds)]
        self._started = False
        self._failure: BaseException | None = None
        self._get_wait_s = 0.0
        self._sample_s = 0.0
        self._batches = 0
        self._lock = threading.Lock()

    def start(self) -> Prefetcher:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        return self

    def get(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """The next batch; raises a worker's error (chained to it: ReplayConnectionError for a connection-class
        failure, ReplayError otherwise), or TimeoutError."""
        if not self._started:
            self.start()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            if self._failure is not None:
                error = self._failure
                what = f"replay prefetch failed: {type(error).__name__}: {bounded(str(error), 200)}"
                if isinstance(error, REDIS_DOWN):  # retryable: the learner waits for Redis (catch REDIS_DOWN)
                    raise ReplayConnectionError(bounded(f"{what}; wait for Redis, then start a new Prefetcher")) \
                        from error
                raise ReplayError(bounded(what)) from error
            if self._stop.is_set() and self._queue.empty():
                raise ReplayError("Prefetcher.get after stop()")
            remaining = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if remaining <= 0:
                raise TimeoutError(f"no replay batch within {timeout} s (limiter waiting for inserts? "
                                   f"see Prefetcher.metrics())")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is not _WAKE:
                self._get_wait_s += time.monotonic() - start
                return item

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.get()

    def stop(self) -> None:
        """Stop the workers and wait for them (at most a few poll intervals)."""
        self._stop.set()
        for thread in self._threads:
            while thread.is_alive():
                try:  # unblock a worker waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                thread.join(_POLL)

    def __enter__(self) -> Prefetcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def metrics(self) -> dict[str, float]:
        """``prefetch/*``: batches ready, consumer seconds spent waiting, mean ms per sampled batch."""
        with self._lock:
            mean_ms = 1000 * self._sample_s / self._batches if self._batches else 0.0
            return {"prefetch/ready": float(self._queue.qsize()), "prefetch/consumer_wait_s": self._get_wait_s,
                    "prefetch/sample_ms": mean_ms, "prefetch/batches": float(self._batches)}

    def _work(self, rng: np.random.Generator) -> None:
        try:
            while not self._stop.is_set():
                if self.limiter is not None:
                    try:
                        self.limiter.wait_sample(timeout=_POLL)
                    except LimiterTimeout:
                        continue  # keep checking the stop flag
                start = time.monotonic()
                batch = self.replay.sample(self.batch, self.length, rng)
                if self.transform is not None:
                    batch = self.transform(batch)
                with self._lock:
                    self._sample_s += time.monotonic() - start
                    self._batches += 1
                if self.limiter is not None:
                    self.limiter.sampled(self.batch * self.length)
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=_POLL)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # surfaced to the consumer by get()
            with self._lock:
                if self._failure is None:
                    self._failure = error
            self._stop.set()
            try:
                self._queue.put_nowait(_WAKE)
            except queue.Full:
                pass  # the consumer finds a batch, then the failure on its next get
