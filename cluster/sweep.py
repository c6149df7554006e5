"""``orrery sweep``: many independent runs (tasks x seeds) of one preset, and what a sweep leaves behind.

    spec = SweepSpec(preset="dmc-cartpole-swingup+debug", seeds=parse_seeds("0:3"), tasks=parse_tasks(["cheetah-run"]))
    state = SweepState.new(sweep_dir, spec)         # or SweepState.load(sweep_dir) to resume
    runs = plan_runs(spec, sweep_dir.name)          # one RunSpec per (task, seed)
    print(format_summary(summarise(state, sweep_dir)))

Every run of a sweep is a whole ``orrery train`` run: its own learner, actors, weight store,
RUN_DIR and replay namespace (the run name ``<sweep>-<task>-s<seed>``, unique across sweeps
that share one Redis). This module is the plan and the bookkeeping, with no Ray in it;
cluster/sweeper.py launches the runs. SWEEP_DIR holds::

    sweep.json     the spec (preset, seeds, tasks, overrides) and each run's state, rewritten atomically
    <run>/         one RUN_DIR per (task, seed)
    summary.json   per task: final evaluation return, mean and std across seeds (when the sweep ends)
    report.html    ``orrery report`` over every run (also ``orrery report SWEEP_DIR``)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from common import config as config_lib
from common.envs.tasks import default_action_repeat, parse_task
from common.fileio import write_atomic

SPEC_FILE = "sweep.json"
SUMMARY_FILE = "summary.json"


class SweepError(ValueError):
    """A sweep that cannot start (malformed seeds, a run the cluster can never hold); the message says why."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"A:B"`` -> seeds A..B-1 (Python's range), or ``"A,B,C"`` -> those seeds; non-negative and distinct."""
    text = text.strip()
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            seeds = tuple(range(int(start), int(stop)))
            if not seeds:
                raise SweepError(f"--seeds {text!r}: the range is empty; A:B runs seeds A..B-1, so B must exceed A")
        else:
            seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SweepError(f"--seeds {text!r}: expected A:B (seeds A..B-1, e.g. 0:10) or a list like 0,3,7") from None
    if min(seeds) < 0:
        raise SweepError(f"--seeds {text!r}: seeds must be >= 0")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def parse_tasks(names: Sequence[str]) -> tuple[str, ...]:
    """Task ids (``dmc:cheetah-run``, ``atari:MsPacman``); a bare name (``cheetah-run``) is a DMC task.

    Only the form is checked here; whether the environment exists is checked by building it
    (cluster/sweeper.py, before anything launches).
    """
    tasks = tuple(name if ":" in name else f"dmc:{name}" for name in names)
    for task in tasks:
        parse_task(task)
    if len(set(tasks)) != len(tasks):
        raise SweepError(f"--tasks {' '.join(names)}: a task is listed twice")
    return tasks


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs; saved in sweep.json so that ``--resume`` runs the same thing."""

    preset: str
    """Preset names joined by '+', as for ``orrery train``."""
    seeds: tuple[int, ...]
    """train.seed of each run."""
    tasks: tuple[str, ...] = ()
    """Task ids; empty runs the preset's task."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` overrides applied to every run after the task's."""
    cluster_replay: bool = False
    """Whether the runs use a cluster Redis (``--redis``); its URL holds a password, so it is not saved here."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepSpec:
        return cls(preset=data["preset"], seeds=tuple(data["seeds"]), tasks=tuple(data.get("tasks", ())),
                   overrides=tuple(data.get("overrides", ())), cluster_replay=bool(data.get("cluster_replay")))


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name (also its RUN_DIR's folder and replay namespace), task and seed."""

    name: str
    task: str
    seed: int
    overrides: tuple[str, ...]
    """The overrides that make this run's config from the sweep's preset."""

    def config(self, preset: str, replay_url: str = "") -> config_lib.Config:
        """The run's config; ``replay_url`` (a cluster Redis) is given apart, as it is saved nowhere in the sweep."""
        extra = [f"replay.url={replay_url}"] if replay_url else []
        return config_lib.load_config(preset, [*self.overrides, *extra])


def plan_runs(spec: SweepSpec, sweep_name: str) -> list[RunSpec]:
    """One RunSpec per (task, seed), tasks outermost; raises ConfigError for overrides no run could use."""
    base = config_lib.load_config(spec.preset, list(spec.overrides))
    if base.replay.url:
        raise SweepError("give a sweep's Redis with --redis URL, not --set replay.url (sweep.json would keep "
                         "its password)")
    if base.cluster.metrics_port > 0:
        raise SweepError(f"cluster.metrics_port={base.cluster.metrics_port}: the runs of a sweep cannot share one "
                         f"port; leave it 0 (each run picks a free one) or -1 (none)")
    runs = []
    for task in spec.tasks or (base.env.task,):
        # The task's own action repeat (PlaNet's for DMC) unless the user's overrides set one.
        task_overrides = [f"env.task={task}", f"env.action_repeat={default_action_repeat(task)}"] if spec.tasks else []
        label = task.replace(":", "_")
        for seed in spec.seeds:
            overrides = (*task_overrides, *spec.overrides, f"train.seed={seed}")
            runs.append(RunSpec(name=f"{sweep_name}-{label}-s{seed}", task=task, seed=seed, overrides=overrides))
    for run in runs:
        run.config(spec.preset)  # every run's config is checked before anything starts
    return runs


# ---------------------------------------------------------------- sweep.json

class SweepState:
    """sweep.json: the spec and, per run, ``state`` (queued/running/done/failed/stopped), ``attempts``, ``error``.

    Written atomically on every change, so a sweep driver that dies leaves a readable file;
    ``--resume`` treats every run that is not done as queued (it continues from its checkpoint).
    """

    def __init__(self, sweep_dir: Path, spec: SweepSpec, runs: dict[str, dict]):
        self.sweep_dir, self.spec, self.runs = Path(sweep_dir), spec, runs

    @classmethod
    def new(cls, sweep_dir: Path, spec: SweepSpec) -> SweepState:
        """A new sweep's state; nothing is written until the first :meth:`mark` (after the checks)."""
        sweep_dir = Path(sweep_dir)
        if (sweep_dir / SPEC_FILE).exists():
            raise SweepError(f"{sweep_dir} already holds a sweep; continue it with --resume {sweep_dir} "
                             f"or choose another --sweep-dir")
        state = cls(sweep_dir, spec, {})
        for run in plan_runs(spec, sweep_dir.name):
            state.runs[run.name] = {"task": run.task, "seed": run.seed, "state": "queued", "attempts": 0}
        return state

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepState:
        path = Path(sweep_dir) / SPEC_FILE
        if not path.is_file():
            raise SweepError(f"--resume {sweep_dir}: no {SPEC_FILE} there; is it a sweep directory?")
        try:
            data = json.loads(path.read_text())
            spec = SweepSpec.from_dict(data["spec"])
            runs = data["runs"]
            if not isinstance(runs, dict) or not all(isinstance(run, dict) and isinstance(run.get("state"), str)
                                                     for run in runs.values()):
                raise ValueError("runs")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SweepError(f"{path} is damaged (not the sweep state orrery writes); restore it from a backup, or "
                             f"start a new sweep (its finished runs' directories stay usable by orrery report)") from None
        return cls(Path(sweep_dir), spec, runs)

    def plan(self) -> list[RunSpec]:
        return plan_runs(self.spec, self.sweep_dir.name)

    def run_dir(self, name: str) -> Path:
        return self.sweep_dir / name

    def mark(self, name: str, **fields) -> None:
        self.runs[name].update(fields, updated=round(time.time(), 3))
        self.save()

    def save(self) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sweep_dir / SPEC_FILE, json.dumps({"spec": self.spec.to_dict(), "runs": self.runs}, indent=2))

    def count(self, state: str) -> int:
        return sum(run["state"] == state for run in self.runs.values())


# ---------------------------------------------------------------- the end

def summarise(state: SweepState) -> list[dict]:
    """Per task: seeds finished and the mean ± std (population) of their final evaluation returns.

    Reads each run's summary.json, so it also works on a sweep that a dead driver left behind.
    """
    rows = []
    for task in dict.fromkeys(run["task"] for run in state.runs.values()):
        names = [name for name, run in state.runs.items() if run["task"] == task]
        returns, random = [], []
        for name in names:
            summary = state.run_dir(name) / SUMMARY_FILE
            if summary.exists():
                evaluation = json.loads(summary.read_text()).get("eval", {})
                returns.append(float(evaluation["return_mean"]))
                random.append(float(evaluation["random_return_mean"]))
        rows.append({"task": task, "runs": len(names), "finished": len(returns),
                     "return_mean": _mean(returns), "return_std": _std(returns),
                     "random_return_mean": _mean(random), "returns": returns})
    return rows


def write_summary(state: SweepState, rows: list[dict]) -> Path:
    return write_atomic(state.sweep_dir / SUMMARY_FILE, json.dumps({"tasks": rows, "runs": state.runs}, indent=2))


def format_summary(rows: list[dict]) -> str:
    """A table: task, seeds finished of planned, final eval return mean ± std across seeds, random policy."""
    header = ("task", "seeds", "eval return (mean ± std over seeds)", "random policy")
    lines = [(row["task"], f"{row['finished']}/{row['runs']}",
              "-" if row["return_mean"] is None else f"{row['return_mean']:.1f} ± {row['return_std']:.1f}",
              "-" if row["random_return_mean"] is None else f"{row['random_return_mean']:.1f}") for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def report_inputs(paths: Sequence[Path]) -> tuple[list[Path], Path | None]:
    """``orrery report`` arguments with every sweep directory replaced by its runs' directories.

    Returns (run directories, the default output folder: the sweep directory when exactly one
    sweep is given, else None).
    """
    run_dirs, sweeps = [], []
    for path in map(Path, paths):
        if (path / SPEC_FILE).is_file():
            state = SweepState.load(path)
            runs = [state.run_dir(name) for name in state.runs if (state.run_dir(name) / "metrics.jsonl").exists()]
            if not runs:
                raise SweepError(f"{path}: no run of this sweep has written metrics yet")
            run_dirs += runs
            sweeps.append(path)
        else:
            run_dirs.append(path)
    return run_dirs, sweeps[0] if len(sweeps) == 1 and len(paths) == 1 else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
