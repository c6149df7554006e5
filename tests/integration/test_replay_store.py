"""SequenceReplay against a real redis-server: round trips, chunk invariants, uniformity, capacity, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.episode import EpisodeError, encode
from replay import Prefetcher, ReplayEmptyError, ReplayError, SequenceReplay
from tests.integration.replay_support import DISCRETE_SPEC, check_batch, expected_chunk, make_episode, new_replay


def fill(replay: SequenceReplay, run: str, lengths) -> dict[int, object]:
    episodes = {n: make_episode(run, n, steps) for n, steps in enumerate(lengths)}
    for episode in episodes.values():
        assert replay.add(episode) is True
    return episodes


# ---------------------------------------------------------------- round trips and chunk invariants

def test_episode_round_trips_bit_exact(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        originals = [make_episode(run_name, 0, 9), make_episode(run_name, 1, 1)]
        for episode in originals:
            assert replay.add(episode)
        assert replay.episode_ids() == [e.info.episode_id for e in originals]
        for episode in originals:
            back = replay.get_episode(episode.info.episode_id)
            assert back.info == episode.info
            for name in ("observations", "actions", "rewards", "terminals"):
                got, want = getattr(back, name), getattr(episode, name)
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
        assert replay.get_episode("never-stored") is None


@pytest.mark.parametrize("length", [1, 2, 5, 10])
def test_chunks_match_the_contract(redis_server, run_name, length):
    """Every chunk equals slicing its episode per the learner's alignment; never crosses episodes."""
    with new_replay(redis_server, run_name, seed=length) as replay:
        episodes = fill(replay, run_name, [9, 3, 12, 4, 1])
        batch = replay.sample(64, length, with_source=True)
        assert batch["observations"].shape == (64, length, 4, 4, 3) and batch["observations"].dtype == np.uint8
        assert batch["actions"].shape == (64, length, 2) and batch["actions"].dtype == np.float32
        assert batch["rewards"].dtype == np.float32 and batch["terminals"].dtype == np.bool_
        assert all(array.flags.writeable and array.flags.c_contiguous for array in batch.values())
        found = check_batch(batch, episodes.get, length)
        assert [f"{run_name}.ep{n:05d}" for n, _ in found] == batch["episode_id"].tolist()
        assert [k for _, k in found] == batch["start"].tolist()
        for number, start in found:  # the chunk fits in its episode
            assert 0 <= start <= episodes[number].length + 1 - length


def test_first_chunk_and_terminal_alignment(redis_server, run_name):
    """k = 0: zero action and reward, is_first; the last frame of a terminal episode is flagged."""
    with new_replay(redis_server, run_name) as replay:
        episode = make_episode(run_name, 1, 3, terminal=True)  # 4 frames
        replay.add(episode)
        batch = replay.sample(8, 4)  # only k = 0 fits
        assert (batch["actions"][:, 0] == 0).all() and (batch["rewards"][:, 0] == 0).all()
        assert batch["is_first"][:, 0].all() and not batch["is_first"][:, 1:].any()
        assert batch["terminals"].tolist() == [[False, False, False, True]] * 8
        np.testing.assert_array_equal(batch["actions"][0, 1:], episode.actions)
        np.testing.assert_array_equal(batch["rewards"][0, 1:], episode.rewards)


def test_discrete_actions(redis_server, run_name):
    with new_replay(redis_server, run_name, spec=DISCRETE_SPEC) as replay:
        episodes = {n: make_episode(run_name, n, 7, action_size=None) for n in range(3)}
        for episode in episodes.values():
            replay.add(episode)
        batch = replay.sample(16, 3)
        assert batch["actions"].shape == (16, 3) and batch["actions"].dtype == np.int64
        check_batch(batch, episodes.get, 3)
        back = replay.get_episode(episodes[1].info.episode_id)
        assert back.actions.dtype == np.int64 and back.discrete
        np.testing.assert_array_equal(back.actions, episodes[1].actions)


@pytest.mark.parametrize("length", [1, 4, 9])
def test_start_positions_are_uniform(redis_server, run_name, length):
    """Chi-square over every valid (episode, start): all of them, equally often; short episodes never."""
    with new_replay(redis_server, run_name, seed=7) as replay:
        lengths = [2, 6, 9, 15, 7, 30]
        episodes = fill(replay, run_name, lengths)
        cells = {(n, k): 0 for n, steps in enumerate(lengths) for k in range(max(0, steps + 2 - length))}
        draws = 150 * len(cells)
        rng = np.random.default_rng(length)
        for _ in range(math.ceil(draws / 1000)):
            batch = replay.sample(1000, length, rng)
            for cell in check_batch(batch, episodes.get, length) if length == 9 else _cells(batch):
                cells[cell] += 1  # a KeyError here would be a start outside the valid ones
        counts = np.array(list(cells.values()), float)
        expected = counts.sum() / len(cells)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        dof = len(cells) - 1
        z = 3.29  # p = 0.0005, Wilson-Hilferty approximation of the chi-square quantile
        critical = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
        assert chi2 < critical, f"chi2={chi2:.1f} over {dof} dof exceeds {critical:.1f}: starts are not uniform"
        assert counts.min() > 0


def _cells(batch) -> list[tuple[int, int]]:
    flat = batch["observations"][:, 0].reshape(len(batch["observations"]), -1).astype(int)
    return list(zip((flat[:, 0] + 256 * flat[:, 1]).tolist(), (flat[:, 2] + 256 * flat[:, 3]).tolist()))


def test_sampling_an_empty_or_too_short_replay_explains(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        with pytest.raises(ReplayEmptyError, match="holds no episode yet"):
            replay.sample(2, 3)
        replay.add(make_episode(run_name, 0, 3))
        with pytest.raises(ReplayEmptyError, match="no chunk of 6 frames: 1 episode"):
            replay.sample(2, 6)
        assert replay.sample(2, 4)["observations"].shape == (2, 4, 4, 4, 3)


# ---------------------------------------------------------------- idempotence and capacity

def test_retried_add_stores_nothing_twice(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        episode = make_episode(run_name, 0, 5)
        assert replay.add(episode) is True
        assert replay.add(episode) is False
        assert replay.add(encode(episode)) is False  # the same id as bytes
        stats = replay.stats()
        assert (stats["replay/episodes"], stats["replay/inserts"], stats["replay/steps"]) == (1, 1, 5)
        assert stats["replay/duplicates"] == 2


@pytest.mark.parametrize("capacity", [12, 25, 64])
def test_capacity_is_exact_with_fifo_eviction(redis_server, run_name, capacity):
    """After every add: stored steps <= capacity, and exactly the newest episodes that fit are kept."""
    with new_replay(redis_server, run_name, capacity_steps=capacity) as replay:
        rng = np.random.default_rng(capacity)
        model: list[tuple[str, int]] = []  # FIFO of (id, T)
        evictions = 0
        for number in range(40):
            episode = make_episode(run_name, number, int(rng.integers(1, min(capacity, 15) + 1)))
            while model and sum(t for _, t in model) + episode.length > capacity:
                model.pop(0)
                evictions += 1
            model.append((episode.info.episode_id, episode.length))
            assert replay.add(episode)
            assert replay.episode_ids() == [i for i, _ in model]
            stats = replay.stats()
            assert stats["replay/steps"] == sum(t for _, t in model) <= capacity
            assert (stats["replay/episodes"], stats["replay/evictions"]) == (len(model), evictions)
        # nothing of an evicted episode is left behind
        keys = replay._client.keys(f"{replay.prefix}e:*")
        assert len(keys) == 6 * len(model)  # o, a, r, d, c, m
        assert replay.get_episode(f"{run_name}.ep00000") is None
        assert replay.add(make_episode(run_name, 0, 3)) is False  # evicted ids stay known: still idempotent


# ---------------------------------------------------------------- bad input

def test_bad_input_is_rejected_with_reasons_and_loses_nothing(redis_server, run_name):
    with new_replay(redis_server, run_name, capacity_steps=50) as replay:
        good = fill(replay, run_name, [5, 6])
        before = replay.stats()

        def unchanged():
            after = replay.stats()
            for key in ("replay/episodes", "replay/steps", "replay/bytes", "replay/inserts"):
                assert after[key] == before[key], key
            for episode in good.values():
                back = replay.get_episode(episode.info.episode_id)
                np.testing.assert_array_equal(back.observations, episode.observations)

        with pytest.raises(EpisodeError, match="malformed episode bytes.*wrong magic"):
            replay.add(b"definitely not an episode")
        with pytest.raises(EpisodeError, match="malformed episode bytes.*truncated"):
            replay.add(encode(make_episode(run_name, 7, 4))[:-10])
        other = make_episode("other-run", 8, 4)
        with pytest.raises(EpisodeError, match="belongs to run 'other-run'.*SequenceReplay\\(url, 'other-run'\\)"):
            replay.add(other)
        with pytest.raises(EpisodeError, match=r"frames \(8, 8, 3\).*differ from the run's frames \(4, 4, 3\)"):
            replay.add(make_episode(run_name, 9, 4, frame=(8, 8, 3)))
        with pytest.raises(EpisodeError, match="discrete actions differ"):
            replay.add(make_episode(run_name, 10, 4, action_size=None))
        with pytest.raises(EpisodeError, match="T=51 steps exceed the replay capacity of 50 steps"):
            replay.add(make_episode(run_name, 11, 51))
        corrupted = make_episode(run_name, 12, 4)
        corrupted.rewards[2] = np.nan  # arrays are mutable after validation: add validates again
        with pytest.raises(EpisodeError, match="rewards: NaN or inf at step 2"):
            replay.add(corrupted)
        with pytest.raises(TypeError, match="expected an Episode"):
            replay.add({"observations": []})
        unchanged()
        assert replay.stats()["replay/rejected"] == before["replay/rejected"] + 7
        assert replay.get_episode(other.info.episode_id) is None


def test_runs_are_separate_namespaces(redis_server, run_name):
    with new_replay(redis_server, run_name) as mine, new_replay(redis_server, run_name + "-b") as theirs:
        fill(mine, run_name, [4, 4])
        assert theirs.episode_ids() == [] and theirs.stats()["replay/episodes"] == 0
        with pytest.raises(ReplayEmptyError):
            theirs.sample(1, 2)


def test_settings_mismatch_and_bad_names(redis_server, run_name):
    new_replay(redis_server, run_name, capacity_steps=100).close()
    with pytest.raises(ReplayError, match="created with capacity_steps=100, this process asks for 200"):
        new_replay(redis_server, run_name, capacity_steps=200)
    SequenceReplay(redis_server.url, run_name).close()  # a sampler need not know the capacity
    with pytest.raises(ReplayError, match="cannot name a replay namespace"):
        SequenceReplay(redis_server.url, "bad:name")
    with pytest.raises(ReplayError, match="no capacity set"):
        with SequenceReplay(redis_server.url, run_name + "-new") as replay:
            replay.add(make_episode(run_name + "-new", 0, 3))


# ---------------------------------------------------------------- stats and prefetching

def test_stats_report_contents_rates_and_counters(redis_server, run_name):
    with new_replay(redis_server, run_name, capacity_steps=20) as replay:
        fill(replay, run_name, [8, 8, 8])  # the third evicts the first
        replay.sample(4, 3)
        stats = replay.stats()
        assert stats["replay/episodes"] == 2 and stats["replay/steps"] == 16
        assert stats["replay/bytes"] == 2 * (9 * 48 + 9 * 8 + 9 * 4 + 9)  # frames, actions, rewards, terminals
        assert stats["replay/evictions"] == 1 and stats["replay/evicted_steps"] == 8
        assert stats["replay/samples"] == 1 and stats["replay/sampled_steps"] == 12
        assert stats["replay/inserts_per_s"] > 0 and stats["replay/samples_per_s"] > 0
        assert replay.counts() == (24, 12)
        assert replay.stats()["replay/inserts_per_s"] == 0  # rates cover the time since the last call


def test_prefetcher_keeps_batches_ready_and_surfaces_errors(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        episodes = fill(replay, run_name, [10, 12])
        with Prefetcher(replay, batch=8, length=4, depth=2, workers=2, seed=0) as prefetcher:
            for _ in range(5):
                check_batch(prefetcher.get(timeout=10), episodes.get, 4)
            assert prefetcher.metrics()["prefetch/batches"] >= 5
        with Prefetcher(replay, batch=8, length=50, depth=2) as failing:  # no episode has 50 frames
            with pytest.raises(ReplayError, match="prefetch failed: ReplayEmptyError: replay holds no chunk") as info:
                failing.get(timeout=10)
            assert isinstance(info.value.__cause__, ReplayEmptyError)


def test_sampling_threads_share_one_replay(redis_server, run_name):
    import threading

    with new_replay(redis_server, run_name) as replay:
        episodes = fill(replay, run_name, [10, 12, 7])
        errors = []

        def work():
            try:
                for _ in range(10):
                    check_batch(replay.sample(8, 5), episodes.get, 5)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(replay._connections) == 3  # one connection per thread


def test_expected_chunk_helper_matches_slicing(run_name):
    """The tests' reference: o_k.., a_{k-1}.. with zero padding at k = 0 (checked by hand once)."""
    episode = make_episode(run_name, 3, 4)
    chunk = expected_chunk(episode, 0, 3)
    np.testing.assert_array_equal(chunk["actions"], np.stack([np.zeros(2, np.float32), *episode.actions[:2]]))
    chunk = expected_chunk(episode, 2, 3)
    np.testing.assert_array_equal(chunk["rewards"], episode.rewards[1:4])
    np.testing.assert_array_equal(chunk["terminals"], episode.terminals[1:4])


def test_a_wiped_namespace_is_noticed_by_samplers(redis_server, run_name):
    """Sequence numbers restart after a wipe; the sampler's index must not mistake new data for old."""
    with new_replay(redis_server, run_name, capacity_steps=100) as sampler:
        old = fill(sampler, run_name, [9, 9, 9])
        check_batch(sampler.sample(8, 4), old.get, 4)
        client = sampler._client
        client.delete(*client.keys(f"{sampler.prefix}*"))  # an operator wipes the run
        with new_replay(redis_server, run_name, capacity_steps=100) as writer:
            new = {n: make_episode(run_name, n, 3) for n in range(10, 14)}  # shorter: stale lengths would show
            for episode in new.values():
                writer.add(episode)
        check_batch(sampler.sample(16, 4), new.get, 4)
