"""Replay at GPU speed: how many (B, L) batches per second one Redis serves to learner processes on its node.

    python tests/benchmarks/bench_replay_node.py [--batch 50] [--length 50] [--learners 1 2 4]
                                                 [--seconds 8] [--transport tcp unix]
                                                 [--episodes 40] [--steps 250]

What it measures. One real redis-server, started as a run starts its embedded replay
(replay.server.EmbeddedRedis: a generated password, TCP on 127.0.0.1 and a Unix socket in the
private RUN_DIR/redis), is filled with ``--episodes`` synthetic episodes of ``--steps`` agent
steps (64x64x3 uint8 frames, 6-D float actions). Then N = 1, 2, 4 concurrent "learner"
*processes* (multiprocessing, spawn: each its own interpreter and its own SequenceReplay client
with the production sampler, checksums verified) sample B x L batches as fast as they can for
``--seconds``, over TCP loopback (the run's ``redis://`` URL) and over the Unix socket
(``EmbeddedRedis.unix_url``, what RunProcesses.local_url hands the learner). For each learner
count both transports run, in the given order and then reversed for the next count, so drift on
a shared machine spreads over both. A real learner also spends ~30 ms per update on its GPU;
this loop has none, so it finds the most one Redis can serve.

Prints one JSON line. Per transport and learner count N (``results[transport][N]``):

    batches_per_s              all N learners together: what this one Redis process served
    batches_per_s_per_learner  the mean learner's rate (the slowest one's: ..._min)
    mb_per_s                   batches_per_s x batch_mb (observations, actions, rewards, flags as returned)
    ms_per_batch_median/_p90   one sample() call, over every batch of every learner
    redis_cpu                  redis-server CPU seconds per second during the window (1.0: one core busy;
                               Redis runs commands on one thread, so near 1.0 it is the limit)
    learner_cpu                the learner processes' CPU seconds per second, all together
    redis_cpu_ms_per_batch     redis-server CPU per batch served (redis_cpu / batches_per_s); steadier than
                               the rates on a shared machine
    learner_cpu_ms_per_batch   a learner's CPU per batch: receiving it, verifying its checksums
    redis_core_batches_per_s   1000 / redis_cpu_ms_per_batch: the batches/s one Redis process serves when its
                               one core is busy all the time (an extrapolation from this row's cost per batch)
    other_cpu                  cores busy with anything else on the machine meanwhile (the parent, the
                               kernel's softirqs, other jobs): well above 0.1 on a shared machine means
                               the figures of that row are a floor
    runs_at_33_batches_per_s   batches_per_s / 33: how many GPU learners at ~30 ms per update
                               (B=50, L=50) this Redis could keep fed at that load

How to read it. ``batches_per_s`` at N=1 is what one learner process can pull; where it stops
growing with N, the Redis process (``redis_cpu`` near 1) or the machine's cores are the limit.
Divide by 33 for the number of runs per Redis (``runs_at_33_batches_per_s``; with a core to
spare for every learner, ``redis_core_batches_per_s / 33`` bounds it). Mind ``cpus``: on a
2-core machine the server and N learners share two cores, so N >= 2 rows measure the machine,
not Redis; and read ``other_cpu`` before trusting a row.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.episode import Episode  # noqa: E402
from replay.server import EmbeddedRedis  # noqa: E402
from replay.spec import ReplaySpec  # noqa: E402
from replay.store import SequenceReplay  # noqa: E402
from tests.synthetic import random_episode  # noqa: E402

RUN = "bench-replay-node"
SPEC = ReplaySpec("cheetah-run", (64, 64, 3), "<f4", (6,))
GPU_BATCHES_PER_S = 33  # a learner at ~30 ms per update


def make_episode(index: int, steps: int, rng: np.random.Generator) -> Episode:
    return random_episode(RUN, index, steps, rng)


def learner(url: str, seed: int, batch: int, length: int, seconds: float, ready, go, results) -> None:
    """One learner process: its own client; sample for ``seconds`` after ``go``; report count, time, ms."""
    try:
        replay = SequenceReplay(url, RUN, seed=seed)
        for _ in range(2):
            replay.sample(batch, length)  # connect, load the index, warm the buffers
        ready.wait()
        go.wait()
        times = []
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            before = time.perf_counter()
            replay.sample(batch, length)
            now = time.perf_counter()
            times.append(1000 * (now - before))
            if now >= deadline:
                break
        cpu = time.process_time() - cpu
        replay.close()
        results.put((seed, len(times), now - start, cpu, times, None))
    except BaseException as error:  # noqa: BLE001 (reported to the parent, never a hang)
        results.put((seed, 0, 0.0, 0.0, [], f"{type(error).__name__}: {str(error)[:300]}"))
        ready.abort()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat, idle and iowait excluded)."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def measure(url: str, learners: int, batch: int, length: int, seconds: float, redis_pid: int,
            round_: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(learners + 1)
    go = context.Event()
    results = context.Queue()
    processes = [context.Process(target=learner, daemon=True,
                                 args=(url, 1000 * round_ + i, batch, length, seconds, ready, go, results))
                 for i in range(learners)]
    for process in processes:
        process.start()
    try:
        ready.wait(timeout=120)
    except Exception:  # a learner failed to start: its error is in the queue
        pass
    cpu_before, busy_before, wall_before = cpu_seconds(redis_pid), busy_seconds(), time.perf_counter()
    go.set()
    reports = [results.get(timeout=seconds + 120) for _ in processes]
    cpu_after, busy_after, wall_after = cpu_seconds(redis_pid), busy_seconds(), time.perf_counter()
    for process in processes:
        process.join(timeout=30)
    errors = [error for *_, error in reports if error]
    if errors:
        raise SystemExit(f"a learner failed: {errors[0]}")
    rates = [count / elapsed for _, count, elapsed, *_ in reports]
    times = [ms for *_, per_learner, _ in reports for ms in per_learner]
    wall = wall_after - wall_before
    redis_cpu = (cpu_after - cpu_before) / wall
    learner_cpu = sum(cpu for _, _, _, cpu, *_ in reports) / wall
    return {"batches_per_s": sum(rates), "batches_per_s_per_learner": statistics.mean(rates),
            "batches_per_s_per_learner_min": min(rates),
            "ms_per_batch_median": statistics.median(times), "ms_per_batch_p90": float(np.percentile(times, 90)),
            "redis_cpu": redis_cpu, "learner_cpu": learner_cpu,
            "other_cpu": max((busy_after - busy_before) / wall - redis_cpu - learner_cpu, 0.0),
            "batches": sum(count for _, count, *_ in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--learners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=8.0, help="sampling time per measurement")
    parser.add_argument("--transport", nargs="+", choices=["tcp", "unix"], default=["tcp", "unix"])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=250, help="agent steps per episode")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        server = EmbeddedRedis(tmp).start()
        try:
            if "unix" in args.transport and server.unix_url is None:
                raise SystemExit("the embedded Redis could bind no Unix socket here; run with --transport tcp")
            urls = {"tcp": server.url, "unix": server.unix_url}
            with SequenceReplay(server.url, RUN, capacity_steps=args.episodes * args.steps, spec=SPEC,
                                seed=0) as replay:
                start = time.perf_counter()
                for i in range(args.episodes):
                    replay.add(make_episode(i, args.steps, rng))
                insert_s = time.perf_counter() - start
                sample = replay.sample(args.batch, args.length)
                batch_mb = sum(array.nbytes for array in sample.values()) / 1e6
            results: dict[str, dict[str, dict[str, float]]] = {transport: {} for transport in args.transport}
            for round_, learners in enumerate(args.learners):
                for transport in (args.transport if round_ % 2 == 0 else args.transport[::-1]):
                    figures = measure(urls[transport], learners, args.batch, args.length, args.seconds,
                                      server.pid, round_)
                    figures["mb_per_s"] = figures["batches_per_s"] * batch_mb
                    figures["redis_cpu_ms_per_batch"] = 1000 * figures["redis_cpu"] / figures["batches_per_s"]
                    figures["learner_cpu_ms_per_batch"] = 1000 * figures["learner_cpu"] / figures["batches_per_s"]
                    figures["redis_core_batches_per_s"] = 1000 / figures["redis_cpu_ms_per_batch"]
                    figures["runs_at_33_batches_per_s"] = figures["batches_per_s"] / GPU_BATCHES_PER_S
                    results[transport][str(learners)] = {
                        name: (value if name == "batches" else round(value, 2)) for name, value in figures.items()}
        finally:
            server.stop()
    print(json.dumps({
        "benchmark": "replay_node", "cpus": os.cpu_count(), "episodes": args.episodes,
        "steps_per_episode": args.steps, "frame": [64, 64, 3], "batch": args.batch, "length": args.length,
        "batch_mb": round(batch_mb, 2), "seconds": args.seconds,
        "insert_episodes_per_s": round(args.episodes / insert_s, 1),
        "socket_in_run_dir": server.socket_path is not None and server.socket_path.parent == server.dir.resolve(),
        "results": results,
    }))


if __name__ == "__main__":
    main()
