"""Replay speed: inserts, and B x L chunk batches through Redis vs an in-process NumPy ring buffer.

    python tests/benchmarks/bench_replay.py [--episodes 40] [--steps 250] [--batch 50] [--length 50]
                                            [--threads 1,2,4] [--batches 40] [--url redis://...]

Starts an embedded redis-server in a temporary directory unless --url is given. Episodes are
``--steps`` agent steps of 64x64x3 frames (250 = cheetah-run's 1000 env steps at action repeat 4)
with 6-D actions. Prints one JSON line:

    insert_episodes_per_s, insert_mb_per_s   add() of whole episodes, one client
    sample_ms_median / _p90 {threads: ms}     per-batch latency with 1, 2, 4 sampler threads, each
                                              thread its own SequenceReplay (own connections)
    sample_batches_per_s {threads: n}         all threads together
    checksum_ms_per_batch                     CPU time to hash one batch's rows (xxh3 per frame, the
                                              small rows at once) outside the sampler; sample_ms_median
                                              includes it, mostly overlapped with the server's sending
    redis_py_pipeline_ms_median               the same batch through a plain redis-py pipeline of
                                              GETRANGEs + np.stack (the baseline this replay beats)
    numpy_ring_ms_median                      the same batch gathered from an in-process ring buffer
    zlib_*                                    what per-frame compression would cost: ratio on
                                              flat-coloured frames (favourable to it) and the time to
                                              decompress one batch of frames
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.episode import Episode  # noqa: E402
from replay.checksum import frame_hashes, mix64  # noqa: E402
from replay.server import EmbeddedRedis  # noqa: E402
from replay.spec import ReplaySpec  # noqa: E402
from replay.store import SequenceReplay  # noqa: E402
from tests.synthetic import moving_square, random_episode  # noqa: E402

RUN = "bench-replay"
SPEC = ReplaySpec("cheetah-run", (64, 64, 3), "<f4", (6,))


def make_episode(index: int, steps: int, rng: np.random.Generator) -> Episode:
    return random_episode(RUN, index, steps, rng)


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return times


def sample_threads(url: str, threads: int, batches: int, batch: int, length: int) -> tuple[list[float], float]:
    """Per-batch milliseconds over all threads, and batches per second of all threads together."""
    replays = [SequenceReplay(url, RUN, seed=i) for i in range(threads)]
    for replay in replays:
        replay.sample(batch, length)  # connect, load the index
    times: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        barrier.wait()
        times[i] = timed(lambda: replays[i].sample(batch, length), batches)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    for replay in replays:
        replay.close()
    return [t for per_thread in times for t in per_thread], threads * batches / elapsed


def redis_py_pipeline(replay: SequenceReplay, client, batch: int, length: int, rng: np.random.Generator):
    """The plain way: redis-py pipeline of frame GETRANGEs, then np.stack (frames only)."""
    index = replay._refresh(replay._connection())  # the same uniform draw as the replay's
    seqs, starts = index.draw(batch, length, rng)
    frame = 64 * 64 * 3
    pipe = client.pipeline(transaction=False)
    for seq, start in zip(seqs.tolist(), starts.tolist()):
        pipe.getrange(f"{replay.prefix}e:{seq}:o", start * frame, (start + length) * frame - 1)
    return np.stack([np.frombuffer(part, np.uint8) for part in pipe.execute()])


def numpy_ring(episodes: list[Episode], batch: int, length: int, repeats: int) -> list[float]:
    """An in-process ring of frames with episode offsets; the same uniform draw over valid starts."""
    frames = np.concatenate([episode.observations for episode in episodes])  # (sum T+1, H, W, C)
    sizes = np.array([len(episode.observations) for episode in episodes])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    starts = np.maximum(sizes - length + 1, 0)
    cumulative = np.cumsum(starts)
    rng = np.random.default_rng(0)

    def sample() -> np.ndarray:
        draws = rng.integers(0, cumulative[-1], batch)
        episode = np.searchsorted(cumulative, draws, side="right")
        first = offsets[episode] + draws - (cumulative[episode] - starts[episode])
        return frames[first[:, None] + np.arange(length)]  # (B, L, H, W, C), one gather copy

    sample()
    return timed(sample, repeats)


def checksum_cost(episodes: list[Episode], batch: int, length: int, repeats: int) -> list[float]:
    """What verifying one batch costs in CPU: every frame hashed, the small rows hashed at once."""
    rows = batch * length
    frames = np.concatenate([episode.observations for episode in episodes])[:rows].reshape(batch, -1)
    small = [np.zeros((rows, width), np.uint8) for width in (SPEC.action_bytes, 4, 1)]  # a, r, d rows
    views = [memoryview(frames[b]) for b in range(batch)]

    def verify() -> None:
        for view in views:
            frame_hashes(view, SPEC.frame_bytes)
        mix64(*small)

    return timed(verify, repeats)


def zlib_probe(batch: int, length: int) -> dict[str, float]:
    frames = moving_square(1, batch * length, seed=0)["observations"][0]  # flat colours: compresses well
    packed = [zlib.compress(frame.tobytes(), 1) for frame in frames]
    ratio = frames.nbytes / sum(len(p) for p in packed)
    start = time.perf_counter()
    for p in packed:
        zlib.decompress(p)
    return {"zlib_ratio_flat_frames": round(ratio, 1),
            "zlib_decompress_ms_per_batch": round(1000 * (time.perf_counter() - start), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--threads", default="1,2,4")
    parser.add_argument("--batches", type=int, default=40, help="batches per thread per measurement")
    parser.add_argument("--url", default="", help="an existing Redis (default: an embedded one in a temp dir)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    episodes = [make_episode(i, args.steps, rng) for i in range(args.episodes)]
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.url else EmbeddedRedis(tmp).start()
        url = args.url or server.url
        try:
            replay = SequenceReplay(url, RUN, capacity_steps=args.episodes * args.steps, spec=SPEC, seed=0)
            start = time.perf_counter()
            for episode in episodes:
                replay.add(episode)
            insert_s = time.perf_counter() - start
            megabytes = sum(episode.nbytes for episode in episodes) / 1e6

            medians, p90s, rates = {}, {}, {}
            for threads in [int(n) for n in args.threads.split(",")]:
                times, rate = sample_threads(url, threads, args.batches, args.batch, args.length)
                medians[threads] = round(statistics.median(times), 2)
                p90s[threads] = round(float(np.percentile(times, 90)), 2)
                rates[threads] = round(rate, 1)
            plain_rng = np.random.default_rng(1)
            plain = timed(lambda: redis_py_pipeline(replay, replay._client, args.batch, args.length, plain_rng),
                          args.batches)
            replay.close()
        finally:
            if server is not None:
                server.stop()
    ring = numpy_ring(episodes, args.batch, args.length, args.batches)
    checksum = checksum_cost(episodes, args.batch, args.length, args.batches)
    result = {
        "benchmark": "replay", "episodes": args.episodes, "steps_per_episode": args.steps, "frame": [64, 64, 3],
        "batch": args.batch, "length": args.length,
        "batch_mb": round(args.batch * args.length * 64 * 64 * 3 / 1e6, 1),
        "transport": "loopback tcp",
        "insert_episodes_per_s": round(args.episodes / insert_s, 1),
        "insert_mb_per_s": round(megabytes / insert_s, 1),
        "sample_ms_median": medians, "sample_ms_p90": p90s, "sample_batches_per_s": rates,
        "checksum_ms_per_batch": round(statistics.median(checksum), 2),
        "redis_py_pipeline_ms_median": round(statistics.median(plain), 2),
        "numpy_ring_ms_median": round(statistics.median(ring), 2),
        **zlib_probe(args.batch, args.length),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
