"""Shared pieces of the `orrery train` end-to-end tests: the CLI as a subprocess, what a run left, fault hooks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import ray

from replay import EmbeddedRedis, SequenceReplay

PRESET = "dmc-cartpole-swingup+debug"


def orrery(*args, timeout=400, env=None):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "RAY_DEDUP_LOGS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def stored_ids(run_dir: Path) -> set[str]:
    """The episode ids the replay holds, read back from the run's own Redis data."""
    with EmbeddedRedis(run_dir) as server:
        replay = SequenceReplay(server.url, run_dir.name)
        ids = set(replay.episode_ids())
        replay.close()
    return ids


def acknowledged(run_dir: Path) -> set[str]:
    return {r["episode"] for r in records(run_dir) if r.get("stored")}


def kill(handle) -> None:
    os.kill(ray.get(handle.pid.remote()), signal.SIGKILL)


class Once:
    """A Driver on_tick hook: runs ``fault(driver)`` the first time ``when(driver)`` holds; ``fired`` tells."""

    def __init__(self, when, fault):
        self.when, self.fault, self.fired = when, fault, False

    def __call__(self, driver) -> None:
        if not self.fired and self.when(driver):
            self.fault(driver)
            self.fired = True


class InTurn:
    """A Driver on_tick hook: fires ``(name, when, fault)`` steps one after the other, each once; ``fired`` lists them."""

    def __init__(self, *steps):
        self.steps, self.fired = list(steps), []

    def __call__(self, driver) -> None:
        if len(self.fired) < len(self.steps):
            name, when, fault = self.steps[len(self.fired)]
            if when(driver):
                fault(driver)
                self.fired.append(name)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, mode and the sha256 of files, to prove nothing was created or changed."""
    if not root.exists():
        return {}
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), digest)
    return found


def processes_of(path: Path) -> list[str]:
    """This user's live processes that run in ``path``, hold a file under it open, or name it on their command line."""
    root = os.path.realpath(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rpartition(") ")[2].startswith("Z"):
                continue  # a zombie is dead: only its parent's bookkeeping is left
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            places = [os.readlink(entry / "cwd")] + [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if root in cmdline or any(place == root or place.startswith(root + os.sep) for place in places):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found
