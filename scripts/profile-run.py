#!/usr/bin/env python3
"""Profile a running `orrery train` run with py-spy and print where each process's wall time goes.

It finds the run's processes on this machine by their command lines (``ray::LearnerWorker``, every
``ray::ActorWorker``, and the ``orrery train`` driver), samples all of them at once with
``py-spy record --format raw --idle --nonblocking`` for ``--seconds``, and sorts every sample of the
thread that does each process's work into a few categories. It changes nothing in the run: py-spy
only reads the processes' memory (``--nonblocking`` does not even pause them).

    .venv/bin/pip install py-spy                  # once; py-spy is not a dependency of orrery
    .venv/bin/orrery train --preset dmc-cheetah-run+cpu ...
    .venv/bin/python scripts/profile-run.py --seconds 40       # in another terminal, during the run

Options: ``--rate HZ`` (samples per second, default 50), ``--out DIR`` (keep py-spy's raw files there,
one per process: ``learner-PID.txt``, ``actor0-PID.txt``, ...), ``--json`` (print only the JSON line).
py-spy needs permission to ptrace the processes (root, or ``kernel.yama.ptrace_scope`` = 0 for the
same user). Exits 0 after a profile, 1 when py-spy failed on a process, 2 when py-spy is missing or no
run is found.

What is measured. py-spy samples every thread of a process separately and its raw output does not
name threads, so each sample is given to a thread by what its stack holds:

* the learner's training thread: stacks under ``LearnerWorker.train`` (a Ray worker thread; the
  learner's main thread only idles in Ray's task loop and is left out);
* the learner's prefetch thread: stacks under ``Prefetcher._work``, reported apart, with its busy share;
* an actor's main thread: stacks under ``ActorWorker.collect``, plus the samples where it sits in
  Ray's task loop (``main_loop``) between two ``collect`` calls (that is the actor's idle time);
* the driver's main thread: stacks under ``Driver.run``.

Each sample goes to one category, by the frames anywhere in its stack, the named step winning over
what it calls: Redis reads inside the limiter's wait are waiting, inside ``SequenceReplay.sample``
they are sampling; a wait nobody named (the innermost frame a sleep, a lock, a select) counts as
waiting. The shares of a thread add up to 100 %; seconds are the share of the profiled wall time.
The raw files (``--out``) hold the full stacks, for a closer look at any category.

Learner (training thread):
  update: forward           the loss: frames under ``Learner._loss`` (encoder, RSSM, decoders, KL)
  update: backward          ``Tensor.backward`` / ``torch.autograd``
  update: optimiser         ``torch.optim`` (Adam's step, zero_grad) and ``clip_grad_norm_``
  update: batch prep        ``Learner._prepare``: device copy, time-major transpose, bit-depth noise
  publishing weights        ``LearnerWorker.publish``: weights to the CPU, ``ray.put``, the weight store
  checkpoint                ``LearnerWorker.save_checkpoint`` / ``learner.checkpoint.save``
  waiting (limiter / idle)  waiting for the next batch in ``Prefetcher.get`` (the limiter holds
                            sampling back, or sampling is slower than updates), Redis restarting,
                            or any other wait
  other                     the rest: the loop itself, metrics (``limiter.metrics`` asks Redis), and on
                            a GPU the host's wait for the device inside ``Learner.update``
Learner (prefetch thread; busy % = everything but its two waits):
  replay sampling           ``SequenceReplay.sample``: chunk choice and reads from Redis
  staging batch             ``Learner.stage`` (tensors, page-locked memory on a GPU)
  waiting for the limiter   ``SamplesPerInsert.wait_sample``: too few inserts for the update ratio
  waiting for queue space   the queue of ready batches is full: the learner is the slower side
  other
Actor (main thread):
  planning                  ``CEMPlanner.plan`` (the world model's imagined rollouts)
  belief update             ``Actor._update_belief`` / ``observe_step`` (the filter on a new frame)
  env step + render         an environment's step/reset/render (common/envs, dm_control, MuJoCo)
  replay write              ``ActorWorker._write`` / ``SequenceReplay.add`` (an episode to Redis)
  loading weights           ``ActorWorker._refresh_weights`` / ``Actor.load_weights``
  waiting for the learner   ``ActorWorker._wait_for_learner`` (samples-per-insert holds inserts back)
  idle                      in Ray's task loop between two ``collect`` calls (waiting for the driver)
  other                     episode bookkeeping, actor start-up, the rest
Driver (main thread):
  waiting on ray            ``ray.wait`` / ``ray.get`` / sleeps: the driver waits for its workers
  other

The first few seconds of a run (start-up, seed episodes, the limiter's minimum fill) are not
representative: profile a run that has been training for a while.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence


class Frame(NamedTuple):
    """One frame of a py-spy stack: ``function (file:line)``; file "" and line 0 where py-spy gives none."""
    function: str
    file: str
    line: int

    @property
    def name(self) -> str:
        """The function's own name: ``plan`` for ``CEMPlanner.plan`` (py-spy gives qualified names on 3.11+)."""
        return self.function.rsplit(".", 1)[-1]


Stack = tuple[Frame, ...]  # outermost frame first, as py-spy writes it


# ---------------------------------------------------------------- parsing

def parse_frame(text: str) -> Frame:
    """``CEMPlanner.plan (actors/planner.py:121)`` -> Frame("CEMPlanner.plan", "actors/planner.py", 121)."""
    text = text.strip()
    if text.endswith(")") and " (" in text:
        function, _, where = text[:-1].rpartition(" (")
        path, colon, line = where.rpartition(":")
        if colon and line.isdigit():
            return Frame(function, path, int(line))
        return Frame(function, where, 0)
    return Frame(text, "", 0)


def parse_raw(text: str) -> list[tuple[Stack, int]]:
    """py-spy's raw format, one unique stack a line, ``frame;frame;...;frame COUNT``, outermost first.

    Blank lines and lines without a trailing count are skipped.
    """
    stacks: list[tuple[Stack, int]] = []
    for line in text.splitlines():
        line = line.rstrip()
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((tuple(parse_frame(part) for part in stack.split(";")), int(count)))
    return stacks


# ---------------------------------------------------------------- matching frames

def _in_file(frame: Frame, suffix: str) -> bool:
    """The frame's file is ``suffix`` (a path ending, matched at a directory boundary) or lies under it."""
    path = frame.file.replace("\\", "/")
    if suffix.endswith("/"):
        return path.startswith(suffix) or f"/{suffix}" in path
    return path == suffix or path.endswith(f"/{suffix}")


def fn(names: str, file: str) -> Callable[[Frame], bool]:
    """A frame of one of the space-separated function ``names`` in ``file`` (a path ending, or a folder/)."""
    wanted = set(names.split())
    return lambda frame: frame.name in wanted and _in_file(frame, file)


def in_file(*files: str) -> Callable[[Frame], bool]:
    """Any frame in one of ``files`` (path endings, or folders ending in /)."""
    return lambda frame: any(_in_file(frame, f) for f in files)


# Functions where a thread blocks: the innermost Python frame of a waiting thread (time.sleep, a lock's
# acquire, select and socket reads are C functions, so py-spy shows the Python frame that called them).
WAIT_NAMES = frozenset({"wait", "_wait", "wait_sample", "wait_insert", "sleep", "select", "poll", "recv", "recv_into",
                        "accept", "main_loop", "_wait_for_tstate_lock", "_wait_for_redis", "_wait_for_learner"})


def is_waiting(stack: Stack) -> bool:
    """The stack's innermost frame is a known wait (see WAIT_NAMES), or a blocking get/put of queue.py."""
    if not stack:
        return False
    inner = stack[-1]
    return inner.name in WAIT_NAMES or (inner.name in ("get", "put") and _in_file(inner, "queue.py"))


MAIN_LOOP = fn("main_loop", "ray/_private/worker.py")


def either(*rules: Callable[[Frame], bool]) -> Callable[[Frame], bool]:
    return lambda frame: any(rule(frame) for rule in rules)


@dataclass(frozen=True)
class Role:
    """One kind of thread: how its samples are found (``entry``) and sorted (``rules``, tried in order).

    ``categories`` lists every category in the order the table shows them. A sample no rule matches goes
    to ``wait_category`` when its innermost frame is a wait (:func:`is_waiting`), else to "other".
    ``idle_category``: Ray's task loop between two calls, counted where the entry runs on the main thread.
    ``waits``: the categories that are not busy time (for the busy share).
    """
    entry: Callable[[Frame], bool]
    categories: tuple[str, ...]
    rules: tuple[tuple[str, Callable[[Frame], bool]], ...]
    wait_category: str = "other"
    idle_category: str | None = None
    waits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        used = {name for name, _ in self.rules} | {self.wait_category, "other", *self.waits}
        used |= {self.idle_category} if self.idle_category else set()
        if not used <= set(self.categories):
            raise ValueError(f"categories {sorted(used - set(self.categories))} are not listed")


ROLES: dict[str, Role] = {
    "learner": Role(
        entry=fn("train", "learner/worker.py"),
        categories=("update: forward", "update: backward", "update: optimiser", "update: batch prep",
                    "publishing weights", "checkpoint", "waiting (limiter / idle)", "other"),
        rules=(
            ("checkpoint", either(fn("save_checkpoint", "learner/worker.py"), fn("save", "learner/checkpoint.py"))),
            ("publishing weights", fn("publish", "learner/worker.py")),
            ("update: forward", either(fn("_loss", "learner/learner.py"), fn("model_loss", "learner/objectives.py"))),
            # Before backward: the optimiser's step runs under torch.autograd.profiler.record_function.
            ("update: optimiser", in_file("torch/optim/", "torch/nn/utils/clip_grad.py")),
            ("update: backward", either(fn("backward", "torch/_tensor.py"), in_file("torch/autograd/"))),
            ("update: batch prep", fn("_prepare", "learner/learner.py")),
            ("waiting (limiter / idle)", either(fn("get", "replay/prefetch.py"),
                                                fn("_wait_for_redis", "learner/worker.py"))),
        ),
        wait_category="waiting (limiter / idle)",
        waits=("waiting (limiter / idle)",),
    ),
    "prefetch": Role(
        entry=fn("_work", "replay/prefetch.py"),
        categories=("replay sampling", "staging batch", "waiting for the limiter", "waiting for queue space", "other"),
        rules=(
            ("waiting for the limiter", fn("wait_sample", "replay/limiter.py")),
            ("replay sampling", fn("sample", "replay/store.py")),
            ("staging batch", fn("stage", "learner/learner.py")),
            ("waiting for queue space", fn("put", "queue.py")),
        ),
        waits=("waiting for the limiter", "waiting for queue space"),
    ),
    "actor": Role(
        entry=fn("collect", "actors/worker.py"),
        categories=("planning", "belief update", "env step + render", "replay write", "loading weights",
                    "waiting for the learner", "idle", "other"),
        rules=(
            ("waiting for the learner", either(fn("_wait_for_learner", "actors/worker.py"),
                                               fn("_wait", "replay/limiter.py"))),
            ("loading weights", either(fn("_refresh_weights", "actors/worker.py"), fn("load_weights", "actors/actor.py"))),
            ("replay write", either(fn("_write", "actors/worker.py"), fn("add", "replay/store.py"))),
            ("planning", fn("plan plan_sequence", "actors/planner.py")),
            ("belief update", either(fn("_update_belief", "actors/actor.py"), lambda f: f.name == "observe_step")),
            ("env step + render", either(fn("step reset _step _reset _render _frame", "common/envs/"),
                                         in_file("dm_control/", "mujoco/"))),
        ),
        idle_category="idle",
        waits=("waiting for the learner", "idle"),
    ),
    "driver": Role(
        entry=fn("run", "cluster/driver.py"),
        categories=("waiting on ray", "other"),
        rules=(("waiting on ray", fn("wait get", "ray/_private/worker.py")),),
        wait_category="waiting on ray",
        waits=("waiting on ray",),
    ),
}


# ---------------------------------------------------------------- bucketing

def bucket(role: str, stacks: Sequence[tuple[Stack, int]]) -> dict[str, int]:
    """Samples per category of ``role`` ("learner", "prefetch", "actor", "driver"), every category present.

    Only the stacks of the role's thread count: those holding its entry frame, plus, for a role whose
    entry runs on the main thread under Ray's ``main_loop`` (an actor's ``collect``), the samples where
    that thread idles in ``main_loop`` with nothing above it. Every other thread is left out.
    """
    spec = ROLES[role]
    counts = dict.fromkeys(spec.categories, 0)
    ours = [(stack, n) for stack, n in stacks if any(spec.entry(frame) for frame in stack)]
    on_main_loop = spec.idle_category is not None and any(MAIN_LOOP(frame) for stack, _ in ours for frame in stack)
    for stack, n in stacks:
        if on_main_loop and stack and MAIN_LOOP(stack[-1]):
            counts[spec.idle_category] += n
    for stack, n in ours:
        counts[classify(spec, stack)] += n
    return counts


def classify(spec: Role, stack: Stack) -> str:
    for name, rule in spec.rules:
        if any(rule(frame) for frame in stack):
            return name
    return spec.wait_category if is_waiting(stack) else "other"


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Percent of all samples per category (0.0 everywhere when there are none)."""
    total = sum(counts.values())
    return {name: 100.0 * n / total if total else 0.0 for name, n in counts.items()}


def busy(role: str, counts: dict[str, int]) -> float:
    """Percent of the role's samples outside its wait categories."""
    total = sum(counts.values())
    waiting = sum(counts.get(name, 0) for name in ROLES[role].waits)
    return 100.0 * (total - waiting) / total if total else 0.0


# ---------------------------------------------------------------- processes

@dataclass(frozen=True)
class Target:
    label: str  # "learner", "actor 0", "driver"
    role: str  # "learner", "actor", "driver"
    pid: int


def _is_ray(args: str, cls: str) -> bool:
    """``ray::ActorWorker``, ``ray::ActorWorker.collect``: Ray's process title for an actor of class ``cls``."""
    head = args.split(None, 1)[0] if args.strip() else ""
    return head == f"ray::{cls}" or head.startswith(f"ray::{cls}.")


def _is_driver(args: str) -> bool:
    words = args.split()
    for i, word in enumerate(words[:-1]):
        if (Path(word).name == "orrery" or word == "cluster.cli") and words[i + 1] == "train":
            return True
    return False


def find_targets(ps_output: str, own_pid: int) -> list[Target]:
    """The run's processes in ``ps -eo pid=,args=`` output: learner(s), actors (in pid order), driver(s)."""
    found: dict[str, list[int]] = {"learner": [], "actor": [], "driver": []}
    for line in ps_output.splitlines():
        pid_text, _, args = line.strip().partition(" ")
        if not pid_text.isdigit() or int(pid_text) == own_pid:
            continue
        pid, args = int(pid_text), args.strip()
        if _is_ray(args, "LearnerWorker"):
            found["learner"].append(pid)
        elif _is_ray(args, "ActorWorker"):
            found["actor"].append(pid)
        elif _is_driver(args):
            found["driver"].append(pid)
    targets = []
    for role in ("learner", "actor", "driver"):
        pids = sorted(found[role])
        numbered = role == "actor" or len(pids) > 1
        targets += [Target(f"{role} {i}" if numbered else role, role, pid) for i, pid in enumerate(pids)]
    return targets


def ps_output() -> str:
    """``ps -eo pid=,args=``: every process's pid and command line."""
    return subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=False).stdout


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def error_line(stderr: str) -> str:
    """py-spy's own message: its last ``Error: ...`` line (a Rust backtrace may follow it), else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["(no message)"])[-1]


def record(py_spy: str, targets: Sequence[Target], seconds: int, rate: int, out: Path) -> dict[Target, str]:
    """Run py-spy on every target at once; returns each raw text; RuntimeError naming every failure (one a line)."""
    runs = []
    for target in targets:
        name = f"{target.label.replace(' ', '')}-{target.pid}"
        raw, log = out / f"{name}.txt", out / f"{name}.log"
        command = [py_spy, "record", "--pid", str(target.pid), "--duration", str(seconds), "--rate", str(rate),
                   "--format", "raw", "--output", str(raw), "--nonblocking", "--idle"]
        with open(log, "w") as stderr:
            runs.append((target, raw, log, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)))
    texts, failures = {}, []
    for target, raw, log, process in runs:
        try:
            code = process.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)
            code = None
        message = log.read_text(errors="replace")
        if code != 0 or not raw.is_file():
            why = "py-spy did not finish in time" if code is None else error_line(message)
            failures.append(f"py-spy failed on {target.label} (pid {target.pid}): {why}")
        else:
            texts[target] = raw.read_text(errors="replace")
    if failures:
        raise RuntimeError("\n".join(failures))
    return texts


# ---------------------------------------------------------------- report

def profile(targets: Sequence[Target], texts: dict[Target, str], seconds: int) -> dict:
    """The JSON report: shares per process, and the learner's prefetch thread apart."""
    report: dict = {"seconds": seconds, "processes": {}, "prefetch thread": {}, "prefetch thread busy %": {},
                    "samples": {}, "pids": {}}
    for target in targets:
        stacks = parse_raw(texts[target])
        counts = bucket(target.role, stacks)
        report["processes"][target.label] = {k: round(v, 1) for k, v in shares(counts).items()}
        report["samples"][target.label] = sum(counts.values())
        report["pids"][target.label] = target.pid
        if target.role == "learner":
            fetch = bucket("prefetch", stacks)
            report["prefetch thread"][target.label] = {k: round(v, 1) for k, v in shares(fetch).items()}
            report["prefetch thread busy %"][target.label] = round(busy("prefetch", fetch), 1)
            report["samples"][f"{target.label} prefetch thread"] = sum(fetch.values())
    return report


def table(title: str, share: dict[str, float], seconds: int) -> list[str]:
    width = max(len(name) for name in share)
    lines = [title]
    lines += [f"  {name:<{width}}  {value:5.1f} %  {value * seconds / 100:6.1f} s" for name, value in share.items()]
    return lines


def render(report: dict) -> str:
    seconds, lines = report["seconds"], []
    for label, share in report["processes"].items():
        samples = report["samples"][label]
        lines += table(f"{label} (pid {report['pids'][label]}, {samples} samples over {seconds} s)", share, seconds)
        if label in report["prefetch thread"]:
            fetch = report["prefetch thread"][label]
            title = (f"{label} prefetch thread: busy {report['prefetch thread busy %'][label]:.1f} % "
                     f"({report['samples'][label + ' prefetch thread']} samples)")
            lines += table(title, fetch, seconds)
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile a running `orrery train` run with py-spy: where each "
                                                 "process's wall time goes.")
    parser.add_argument("--seconds", type=int, default=40, help="how long to sample (default 40)")
    parser.add_argument("--rate", type=int, default=50, help="samples per second (default 50)")
    parser.add_argument("--out", type=Path, help="keep py-spy's raw files (and logs) in this folder")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rate < 1:
        parser.error("--seconds and --rate must be at least 1")

    py_spy = find_py_spy()
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy (into this virtualenv)")
        return 2
    targets = find_targets(ps_output(), os.getpid())
    if not any(t.role in ("learner", "actor") for t in targets):
        print("no running run was found (no ray::LearnerWorker or ray::ActorWorker process): "
              "start one with `orrery train ...`")
        return 2
    if not args.json:
        names = ", ".join(f"{t.label} (pid {t.pid})" for t in targets)
        print(f"sampling {names} for {args.seconds} s at {args.rate} Hz ...", flush=True)

    with tempfile.TemporaryDirectory(prefix="profile-run-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        try:
            texts = record(py_spy, targets, args.seconds, args.rate, out)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
    report = profile(targets, texts, args.seconds)
    if not args.json:
        print(render(report))
        if args.out:
            print(f"raw py-spy files in {args.out}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
