"""Samples-per-insert rate limiting (Reverb's SampleToInsertRatio, dreamerv3's SamplesPerInsert).

The learner should sample ``ratio`` steps per inserted agent step (``derive(cfg).samples_per_insert``
= updates per agent step x B x L), however many actors there are. With I inserted and S sampled
steps, m = ``min_size`` and l = ``lead``::

    error  = S - ratio * (I - m + l)      > 0: the learner is ahead;  < 0: the actors are ahead
    band   = tolerance * ratio * I        the drift allowed (relative to what was inserted)
    sample allowed   iff  I >= m  and  error <  band
    insert allowed   iff  I <  m   or  error >= -band'     band' = insert_tolerance * ratio * I

``insert_tolerance`` is ``tolerance`` unless given (the same drift either way).

The lead is PlaNet's order of work: it trains C updates on the seed episodes, then collects an episode,
then trains C more, so the episode being collected has had its updates before it starts. A run's
limiter (``for_run``) has a lead of one episode and no drift on the actors' side: an actor waits,
before it collects, until the learner has sampled what is owed for the stored episodes plus the one it
is about to collect, and then takes the newest weights; the learner may run ahead by the band while
the actors collect. Early in a run (a small band) that is PlaNet's alternation; once the band is an
episode's worth of updates (10 episodes in, at 10 %), learner and actors overlap fully. Without the
lead the learner trails by an episode, and the first planned episode uses a model that has seen a
few updates at most (on cheetah-run it plans with the initial weights: below the random policy).

At least one side may always proceed (if sampling is refused, error >= band >= 0 >= -band'), so the
limiter never deadlocks; the side that runs ahead waits. Each check happens before the action,
so ``error`` overshoots the band by at most one batch (B x L) per sampler, or one episode
(ratio x T) per actor that checked at the same moment.

Counters are either local (:class:`LocalCounters`: one process, e.g. tests or a single-machine
loop) or the replay's own, in Redis (:class:`~replay.store.SequenceReplay` has ``counts()``:
``add`` and ``sample`` increment them atomically), so that many actor processes and one learner
share one limiter state without talking to each other.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from replay.errors import LimiterTimeout


class Counters(Protocol):
    """Where the limiter reads (inserted steps, sampled steps)."""

    def counts(self) -> tuple[int, int]: ...


class LocalCounters:
    """In-process counters; recording wakes waiters at once."""

    def __init__(self) -> None:
        self.inserted_steps = 0
        self.sampled_steps = 0
        self.changed = threading.Condition()

    def counts(self) -> tuple[int, int]:
        return self.inserted_steps, self.sampled_steps

    def add(self, inserted: int = 0, sampled: int = 0) -> None:
        with self.changed:
            self.inserted_steps += inserted
            self.sampled_steps += sampled
            self.changed.notify_all()


class SamplesPerInsert:
    """The rule above plus blocking waits with timeouts and wait metrics."""

    def __init__(self, ratio: float, min_size: int, tolerance: float, *, lead: int = 0,
                 insert_tolerance: float | None = None, counters: Counters | None = None,
                 poll_interval: float = 0.005):
        """``ratio``: sampled steps per inserted step; ``min_size``: inserted steps before any sampling;
        ``tolerance``: relative drift (0.1 = 10 %); ``lead``: inserted steps the learner's target runs ahead
        of what is stored (a run's: one episode); ``insert_tolerance``: the actors' drift (default
        ``tolerance``; a run's: 0). ``counters``: default local; pass a SequenceReplay
        to share the replay's counters in Redis (then waits poll every ``poll_interval`` seconds).
        """
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"samples-per-insert ratio must be a positive number, got {ratio!r}")
        insert_tolerance = tolerance if insert_tolerance is None else insert_tolerance
        for name, value in (("tolerance", tolerance), ("insert tolerance", insert_tolerance)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"samples-per-insert {name} must be >= 0, got {value!r}")
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0 inserted steps, got {min_size!r}")
        if lead < 0:
            raise ValueError(f"lead must be >= 0 inserted steps, got {lead!r}")
        self.ratio = float(ratio)
        self.min_size = int(min_size)
        self.lead = int(lead)
        self.tolerance = float(tolerance)
        self.insert_tolerance = float(insert_tolerance)
        self.counters: Counters = counters if counters is not None else LocalCounters()
        self.poll_interval = poll_interval
        self._waits = {"insert": 0, "sample": 0}
        self._wait_s = {"insert": 0.0, "sample": 0.0}
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, cfg, counters: Counters | None = None) -> SamplesPerInsert:
        """The limiter of a run: PlaNet's updates per collected episode as a ratio (``common.config.derive``),
        with the learner one full-length episode ahead (PlaNet's order, module docstring)."""
        from common.config import derive

        derived = derive(cfg)
        return cls(derived.samples_per_insert, derived.min_replay_steps, cfg.replay.samples_per_insert_tolerance,
                   lead=derived.episode_agent_steps, insert_tolerance=0.0, counters=counters)

    # ------------------------------------------------------------ the rule (pure)

    def error(self, inserted: int, sampled: int) -> float:
        """Sampled steps beyond the target ratio x (I - min_size + lead); negative when the learner is behind."""
        return sampled - self.ratio * (inserted - self.min_size + self.lead)

    def band(self, inserted: int) -> float:
        """Allowed error on the learner's side: tolerance x ratio x I."""
        return self.tolerance * self.ratio * inserted

    def insert_band(self, inserted: int) -> float:
        """Allowed -error on the actors' side: insert_tolerance x ratio x I."""
        return self.insert_tolerance * self.ratio * inserted

    def sample_allowed(self, inserted: int, sampled: int) -> bool:
        return inserted >= self.min_size and self.error(inserted, sampled) < self.band(inserted)

    def insert_allowed(self, inserted: int, sampled: int) -> bool:
        return inserted < self.min_size or self.error(inserted, sampled) >= -self.insert_band(inserted)

    # ------------------------------------------------------------ against the counters

    def can_sample(self) -> bool:
        return self.sample_allowed(*self.counters.counts())

    def can_insert(self) -> bool:
        return self.insert_allowed(*self.counters.counts())

    def inserted(self, steps: int) -> None:
        """Record an insert (local counters only; the replay counts its own inserts)."""
        if isinstance(self.counters, LocalCounters):
            self.counters.add(inserted=steps)

    def sampled(self, steps: int) -> None:
        """Record a sampled batch of ``steps`` = B x L (local counters only)."""
        if isinstance(self.counters, LocalCounters):
            self.counters.add(sampled=steps)

    def wait_sample(self, timeout: float | None = None) -> float:
        """Block until sampling is allowed; returns the seconds waited. LimiterTimeout after ``timeout``."""
        return self._wait("sample", self.sample_allowed, timeout)

    def wait_insert(self, timeout: float | None = None) -> float:
        """Block until inserting is allowed; returns the seconds waited. LimiterTimeout after ``timeout``."""
        return self._wait("insert", self.insert_allowed, timeout)

    def metrics(self, counts: tuple[int, int] | None = None) -> dict[str, float]:
        """``limiter/*``: waits and seconds waited per side, the observed ratio and the error; ``counts``:
        (inserted, sampled) just read from the counters, to save reading them again (default: read them)."""
        inserted, sampled = counts if counts is not None else self.counters.counts()
        with self._lock:
            metrics = {f"limiter/{side}_waits": float(n) for side, n in self._waits.items()}
            metrics.update({f"limiter/{side}_wait_s": s for side, s in self._wait_s.items()})
        over = inserted - self.min_size
        metrics["limiter/samples_per_insert"] = sampled / over if over > 0 else 0.0
        metrics["limiter/error_steps"] = self.error(inserted, sampled)
        return metrics

    # ------------------------------------------------------------ internals

    def _wait(self, side: str, allowed, timeout: float | None) -> float:
        start = time.monotonic()
        counts = self.counters.counts()
        if allowed(*counts):
            return 0.0
        deadline = None if timeout is None else start + timeout
        local = self.counters if isinstance(self.counters, LocalCounters) else None
        while not allowed(*counts):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._record(side, time.monotonic() - start)
                raise LimiterTimeout(self._stuck_message(side, counts, timeout))
            if local is not None:
                with local.changed:
                    if not allowed(*local.counts()):
                        local.changed.wait(remaining)
            else:
                time.sleep(self.poll_interval if remaining is None else min(self.poll_interval, remaining))
            counts = self.counters.counts()
        waited = time.monotonic() - start
        self._record(side, waited)
        return waited

    def _record(self, side: str, seconds: float) -> None:
        with self._lock:
            self._waits[side] += 1
            self._wait_s[side] += seconds

    def _stuck_message(self, side: str, counts: tuple[int, int], timeout: float | None) -> str:
        inserted, sampled = counts
        error = self.error(inserted, sampled)
        if side == "sample":
            if inserted < self.min_size:
                return (f"samples-per-insert: waited {timeout} s to sample but only {inserted} of min_size="
                        f"{self.min_size} steps are inserted; are the actors running?")
            return (f"samples-per-insert: waited {timeout} s to sample; the learner is {error:.0f} sampled steps "
                    f"ahead of ratio {self.ratio:g} x {inserted - self.min_size + self.lead} inserted steps (band "
                    f"{self.band(inserted):.0f}); are the actors running?")
        return (f"samples-per-insert: waited {timeout} s to insert; the learner is {-error:.0f} sampled steps "
                f"behind ratio {self.ratio:g} x {inserted - self.min_size + self.lead} inserted steps (band "
                f"{self.insert_band(inserted):.0f}); is the learner running?")
