"""Where a process's time goes: named sections whose seconds add up, reported as counters.

    watch = Stopwatch()
    with watch.section("plan"):
        ...                                   # timed
    watch.metrics("actor")                    # {"actor/plan_s": 1.23, ...}

Sections are cumulative over the life of the object (a process), so they are counters in
Prometheus (``rate(orrery_actor_plan_s_total[1m])`` is the share of wall time spent planning)
and ``orrery report`` divides their totals by a run's wall time (cluster/profile.py, time_profile).
Nested sections are allowed but then count twice; the callers here never nest them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Stopwatch:
    def __init__(self, names: tuple[str, ...] = ()):
        """``names``: sections reported (as 0) before they first run, so every counter exists from the start."""
        self.seconds: dict[str, float] = {name: 0.0 for name in names}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def metrics(self, component: str) -> dict[str, float]:
        """``{component/<section>_s: seconds}``: the keys common/metrics.py catalogues."""
        # list(): one step under the GIL, so a section ending in another thread cannot change the dict mid-read
        return {f"{component}/{name}_s": seconds for name, seconds in list(self.seconds.items())}
