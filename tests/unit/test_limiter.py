"""Samples-per-insert limiter: the rule, no deadlock, the ratio held under any interleaving, waits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from replay.errors import LimiterTimeout
from replay.limiter import LocalCounters, SamplesPerInsert


def test_nothing_is_sampled_before_min_size():
    limiter = SamplesPerInsert(ratio=10, min_size=100, tolerance=0.1)
    assert limiter.insert_allowed(0, 0) and limiter.insert_allowed(99, 0)
    assert not limiter.sample_allowed(99, 0)
    assert limiter.sample_allowed(100, 0)


def test_the_side_ahead_is_held():
    limiter = SamplesPerInsert(ratio=10, min_size=0, tolerance=0.1)
    inserted = 1000  # target 10_000 sampled steps, band 1_000
    assert limiter.sample_allowed(inserted, 10_999) and not limiter.sample_allowed(inserted, 11_000)
    assert limiter.insert_allowed(inserted, 9_000) and not limiter.insert_allowed(inserted, 8_999)


@pytest.mark.parametrize("tolerance, lead, insert_tolerance", [(0.0, 0, None), (0.05, 0, None), (0.5, 0, None),
                                                            (0.1, 30, 0.0), (0.0, 30, 0.0)])
def test_never_deadlocks(tolerance, lead, insert_tolerance):
    limiter = SamplesPerInsert(ratio=3.5, min_size=20, tolerance=tolerance, lead=lead, insert_tolerance=insert_tolerance)
    for inserted in range(0, 200, 7):
        for sampled in range(0, 1000, 13):
            assert limiter.sample_allowed(inserted, sampled) or limiter.insert_allowed(inserted, sampled)


@pytest.mark.parametrize("ratio, batch, episode", [(1000.0, 2500, 250), (0.5, 4, 30), (20.0, 50, 10)])
def test_ratio_is_held_under_random_interleaving(ratio, batch, episode):
    """Greedy actors and learner in random order: |error| never exceeds band + one batch or episode."""
    limiter = SamplesPerInsert(ratio=ratio, min_size=3 * episode, tolerance=0.1)
    rng = np.random.default_rng(0)
    counters = limiter.counters
    for _ in range(5000):
        if rng.random() < 0.5 and limiter.can_insert():
            limiter.inserted(episode)
        elif limiter.can_sample():
            limiter.sampled(batch)
        inserted, sampled = counters.counts()
        if inserted >= limiter.min_size:
            assert abs(limiter.error(inserted, sampled)) <= limiter.band(inserted) + max(batch, ratio * episode)
    inserted, sampled = counters.counts()
    target = ratio * (inserted - limiter.min_size)
    assert inserted > 10 * limiter.min_size  # both sides kept moving
    assert abs(sampled / target - 1) <= (limiter.band(inserted) + max(batch, ratio * episode)) / target < 0.15


def test_waits_block_until_the_other_side_moves_and_are_counted():
    limiter = SamplesPerInsert(ratio=2, min_size=10, tolerance=0.1)
    assert limiter.wait_insert(timeout=0.1) == 0.0  # nothing to wait for
    threading.Timer(0.05, limiter.inserted, args=(10,)).start()  # reaches min_size
    waited = limiter.wait_sample(timeout=5)
    assert waited > 0.03
    limiter.sampled(20)  # 20 ahead of 2 x (10 - 10), band 2: insert allowed, sample not
    assert limiter.can_insert() and not limiter.can_sample()
    threading.Timer(0.05, limiter.inserted, args=(10,)).start()
    assert limiter.wait_sample(timeout=5) > 0.03
    metrics = limiter.metrics()
    assert limiter.metrics(limiter.counters.counts()) == metrics  # counts the caller just read: the same figures
    assert metrics["limiter/sample_waits"] == 2 and metrics["limiter/sample_wait_s"] > 0.06
    assert metrics["limiter/insert_waits"] == 0
    assert metrics["limiter/samples_per_insert"] == 2.0


def test_timeouts_say_which_side_stalls():
    limiter = SamplesPerInsert(ratio=2, min_size=10, tolerance=0.0)
    with pytest.raises(LimiterTimeout, match="only 0 of min_size=10 steps are inserted; are the actors running"):
        limiter.wait_sample(timeout=0.02)
    limiter.inserted(10)
    limiter.inserted(10)  # learner now 20 sampled steps behind
    start = time.monotonic()
    with pytest.raises(LimiterTimeout, match="learner is 20 sampled steps behind.*is the learner running"):
        limiter.wait_insert(timeout=0.05)
    assert time.monotonic() - start < 1
    assert limiter.metrics()["limiter/insert_waits"] == 1


def test_shared_counters_and_polling():
    """A limiter over someone else's counters (as over the replay's in Redis) polls them."""
    shared = LocalCounters()

    class Remote:  # counts() only, like SequenceReplay
        def counts(self):
            return shared.counts()

    limiter = SamplesPerInsert(ratio=1, min_size=5, tolerance=0.1, counters=Remote(), poll_interval=0.001)
    threading.Timer(0.03, shared.add, kwargs={"inserted": 5}).start()
    assert limiter.wait_sample(timeout=5) > 0.01
    limiter.sampled(100)  # recorded by the remote side, not here
    assert shared.counts() == (5, 0)


def test_bad_settings():
    for kwargs in ({"ratio": 0}, {"ratio": float("nan")}, {"tolerance": -1}, {"min_size": -1}, {"lead": -1},
                   {"insert_tolerance": float("inf")}):
        settings = {"ratio": 1.0, "min_size": 0, "tolerance": 0.1, **kwargs}
        with pytest.raises(ValueError):
            SamplesPerInsert(**settings)


def test_limiter_of_a_run_uses_the_derived_ratio():
    from common.config import derive, load_config

    cfg = load_config("dmc-cheetah-run")
    limiter = SamplesPerInsert.for_run(cfg)
    assert limiter.ratio == derive(cfg).samples_per_insert == 100 / 250 * 50 * 50
    assert limiter.min_size == derive(cfg).min_replay_steps and limiter.tolerance == cfg.replay.samples_per_insert_tolerance
    assert limiter.lead == derive(cfg).episode_agent_steps == 250 and limiter.insert_tolerance == 0.0


def test_with_a_lead_of_one_episode_each_episode_is_collected_after_its_updates():
    """PlaNet's order: C updates on the seed episodes before the first planned episode, C more before each next.

    An actor that, like the run's, checks before it collects, and a learner that trains while it may: the actor
    starts episode n (n = 1, 2, ... after S seed episodes) only once n x C updates are done; without the lead
    (and with the band on both sides) it would start after (n - 1) x C less the band: the first on no updates."""
    T, C, S, batch = 100, 20, 5, 10  # agent steps per episode, updates per episode, seed episodes, steps per update
    ratio = C * batch / T
    for lead, owed_before_first in ((T, C), (0, 0)):
        limiter = SamplesPerInsert(ratio=ratio, min_size=S * T, tolerance=0.1, lead=lead,
                                   insert_tolerance=0.0 if lead else None)
        limiter.inserted(S * T)  # the seed episodes
        for n in range(1, 30):
            while not limiter.can_insert():  # the actor waits for the learner before it collects episode n
                assert limiter.can_sample()
                limiter.sampled(batch)
            updates = limiter.counters.sampled_steps // batch
            inserted = limiter.counters.inserted_steps
            assert updates >= owed_before_first + (n - 1) * C - limiter.band(inserted) / batch
            if lead:  # all of them: the actors' side has no drift
                assert updates >= n * C
            limiter.inserted(T)
            while limiter.can_sample() and limiter.counters.sampled_steps < (n + 1) * C * batch:  # while collecting
                limiter.sampled(batch)
