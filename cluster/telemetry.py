"""What a run leaves for people: ``metrics.jsonl`` (one JSON object per line, each with ``env_steps``)
and a progress line every few seconds (a live bar on a terminal)."""

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
