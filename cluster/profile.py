"""Where a run's time went, from its ``metrics.jsonl``: each process's named sections as shares of the wall time.

    rows = time_profile(records)       # [ProcessTime("learner", {"updates": 0.81, ...}), ProcessTime("actor 0", ...)]
    time_table({"run-a": records})     # the Markdown table ``orrery report`` writes to OUT/time.md

The learner and every actor report cumulative seconds per section (common/timing.py; the ``*_s``
counters of common/metrics.py). A process that Ray restarted starts its counters again from 0, so
totals add up the rises of each counter and count a fall as a restart. The wall time is the sum of
the run's driver sessions (a resumed run does not count the time it was stopped). What no section
covers is "other": starting up, Ray calls, Python between the sections. Evaluations run beside
training in their own task; they are one row, their seconds as a share of the same wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

LEARNER = {"learner/update_s": "updates", "learner/batch_wait_s": "waiting for a batch",
           "learner/publish_s": "publishing weights", "learner/checkpoint_s": "checkpoints"}
ACTOR = {"actor/plan_s": "planning", "actor/env_s": "env steps", "actor/observe_s": "belief updates",
         "actor/write_s": "replay writes", "actor/weights_s": "loading weights",
         "actor/insert_wait_s": "waiting for the learner"}
"""Counter key -> what the table calls it, in the order the table lists them."""


@dataclass(frozen=True)
class ProcessTime:
    process: str  # "learner", "actor 0", ..., "evaluations"
    shares: dict[str, float]  # section -> share of the run's wall time, "other" last (processes that train)

    def text(self) -> str:
        """``updates 80 % · waiting for a batch 10 % · ...``"""
        return " · ".join(f"{label} {100 * share:.0f} %" for label, share in self.shares.items())


def counter_total(values: Iterable[float]) -> float:
    """The total a counter counted over its samples, in order: rises add up, a fall is a restart from 0."""
    total, last = 0.0, 0.0
    for value in values:
        total += value - last if value >= last else value
        last = value
    return total


def wall_seconds(records: Sequence[Mapping]) -> float:
    """The run's wall time: for each driver session (``driver/start_time_s``), its start to its last record."""
    ends: dict[float, float] = {}
    for record in records:
        start = record.get("driver/start_time_s")
        if start is not None:
            ends[start] = max(ends.get(start, start), record["time"])
    return sum(end - start for start, end in ends.items())


def time_profile(records: Sequence[Mapping]) -> list[ProcessTime]:
    """The learner, each actor and the evaluations as shares of the wall time; [] for a run without the counters."""
    wall = wall_seconds(records)
    if wall <= 0:
        return []
    rows = []
    learner = [record for record in records if "learner/update_s" in record]
    if learner:
        rows.append(_process("learner", learner, LEARNER, wall))
    for index in sorted({record["actor"] for record in records if "actor/plan_s" in record and "actor" in record}):
        mine = [record for record in records if record.get("actor") == index and "actor/plan_s" in record]
        rows.append(_process(f"actor {index}", mine, ACTOR, wall))
    evaluations = [record["eval/seconds"] for record in records if "eval/seconds" in record]
    if evaluations:
        rows.append(ProcessTime(f"evaluations ({len(evaluations)})", {"evaluating": sum(evaluations) / wall}))
    return rows


def _process(name: str, records: Sequence[Mapping], sections: Mapping[str, str], wall: float) -> ProcessTime:
    shares = {label: counter_total(r.get(key, 0.0) for r in records) / wall for key, label in sections.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return ProcessTime(name, shares)


def time_table(runs: Mapping[str, Sequence[Mapping]]) -> str:
    """Markdown: one row per process of each run (name -> its records), its sections as shares of the wall time."""
    lines = ["| run | wall time | process | share of the wall time |", "|---|---|---|---|"]
    for name, records in runs.items():
        wall = wall_seconds(records)
        for row in time_profile(records):
            lines.append(f"| {name} | {duration(wall)} | {row.process} | {row.text()} |")
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``12 min 05 s``, ``40 s``."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
