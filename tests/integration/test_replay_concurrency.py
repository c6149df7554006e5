"""Many writers, samplers and evictions at once: exactly-once storage, no torn chunk, the ratio held."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from replay import Prefetcher, SamplesPerInsert, SequenceReplay
from tests.integration.replay_support import SPEC, check_batch, make_episode

WRITERS, PER_WRITER, CAPACITY = 4, 25, 300


def steps_of(number: int) -> int:
    """Episode lengths 4..16, a function of the episode number so any process can rebuild it."""
    return 4 + (number * 7) % 13


def write_episodes(url: str, run: str, writer: int) -> list[int]:
    """A writer process: add its episodes, retry every fifth once; return the acknowledged numbers."""
    acknowledged = []
    with SequenceReplay(url, run) as replay:
        for n in range(PER_WRITER):
            number = 1000 * (writer + 1) + n
            episode = make_episode(run, number, steps_of(number))
            assert replay.add(episode) is True
            acknowledged.append(number)
            if n % 5 == 0:
                assert replay.add(episode) is False  # a retry after an ack stores nothing
    return acknowledged


@pytest.mark.slow
def test_four_writer_processes_and_a_sampler(redis_server):
    run = "concurrent"
    rebuild = lambda number: make_episode(run, number, steps_of(number))  # noqa: E731
    with SequenceReplay(redis_server.url, run, capacity_steps=CAPACITY, spec=SPEC, seed=0) as sampler:
        sampler.add(rebuild(1))  # something to sample from the start
        context = multiprocessing.get_context("spawn")
        with context.Pool(WRITERS) as pool:
            pending = [pool.apply_async(write_episodes, (redis_server.url, run, w)) for w in range(WRITERS)]
            batches = 0
            while not all(result.ready() for result in pending) or batches < 5:
                length = 2 + batches % 4
                check_batch(sampler.sample(32, length), rebuild, length)  # raises on any torn chunk
                batches += 1
            acknowledged = [1] + [number for result in pending for number in result.get(timeout=60)]

        stats = sampler.stats()
        assert len(set(acknowledged)) == len(acknowledged) == 1 + WRITERS * PER_WRITER
        assert stats["replay/inserts"] == len(acknowledged)  # each acknowledged episode stored once
        assert stats["replay/duplicates"] == WRITERS * PER_WRITER // 5
        client = sampler._client
        assert client.scard(sampler.prefix + "seen") == len(acknowledged)
        assert client.sismember(sampler.prefix + "seen", f"{run}.ep01024")
        # what is still stored: the newest episodes, whole, within capacity
        stored = sampler.episode_ids()
        assert stats["replay/episodes"] == len(stored) and stats["replay/steps"] <= CAPACITY
        assert stats["replay/evictions"] == len(acknowledged) - len(stored)
        lengths = [int(n) for n in client.lrange(sampler.prefix + "lens", 0, -1)]
        assert sum(lengths) == stats["replay/steps"]
        for episode_id in stored:
            number = int(episode_id.rsplit("ep", 1)[1])
            back, want = sampler.get_episode(episode_id), rebuild(number)
            np.testing.assert_array_equal(back.observations, want.observations)
        assert batches >= 5


def test_limiter_holds_the_ratio_through_redis(redis_server):
    """Two actor threads and a prefetching learner share only the replay's counters in Redis."""
    run = "limited"
    ratio, min_size, tolerance, steps, batch, length = 4.0, 30, 0.1, 10, 4, 5
    with SequenceReplay(redis_server.url, run, capacity_steps=10_000, spec=SPEC, seed=1) as learner_replay:
        limiter = SamplesPerInsert(ratio, min_size, tolerance, counters=learner_replay)
        errors = []

        def actor(index: int) -> None:
            try:
                with SequenceReplay(redis_server.url, run) as replay:
                    mine = SamplesPerInsert(ratio, min_size, tolerance, counters=replay)
                    for n in range(20):
                        mine.wait_insert(timeout=20)
                        replay.add(make_episode(run, 100 * (index + 1) + n, steps))
            except BaseException as error:  # reported below
                errors.append(error)

        actors = [threading.Thread(target=actor, args=(i,)) for i in range(2)]
        seen = []
        with Prefetcher(learner_replay, batch, length, depth=1, limiter=limiter) as prefetcher:
            for thread in actors:
                thread.start()
            while any(thread.is_alive() for thread in actors):
                seen.append(learner_replay.counts())
                try:
                    prefetcher.get(timeout=0.05)
                except TimeoutError:
                    pass
            time.sleep(0.3)  # let the learner catch up with the last inserts
        assert not errors, errors
        inserted, sampled = learner_replay.counts()
        assert inserted == 2 * 20 * steps
        # within the band, plus one batch per sampler and one episode per actor of overshoot
        slack = batch * length + 2 * ratio * steps
        assert abs(limiter.error(inserted, sampled)) <= limiter.band(inserted) + slack
        assert abs(sampled / (inserted - min_size) / ratio - 1) < tolerance + slack / (ratio * inserted)
        metrics = limiter.metrics()
        assert metrics["limiter/sample_waits"] > 0  # the learner was held back at times
        for inserted, sampled in seen:  # at every moment, not only at the end
            if inserted >= min_size:
                assert abs(limiter.error(inserted, sampled)) <= limiter.band(inserted) + slack
            else:
                assert sampled == 0  # nothing before min_size
