"""Corrupt data in a real redis-server: detected by checksums and the index, quarantined once, never served.

Each test damages one stored episode behind the replay's back (as a disk fault, an operator's
mistake or a bug elsewhere would), then samples many batches: every chunk must still be
bit-exact (check_batch), the damaged episode must be taken out of service exactly once and
counted, and the other episodes must still be served. Scripts fed unusable state must write
nothing and say which key is wrong, in a short message.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import redis

from replay import Prefetcher, ReplayError, SequenceReplay
from replay.errors import MESSAGE_LIMIT
from replay.index import QUARANTINED
from tests.integration.replay_support import SPEC, check_batch, make_episode, new_replay

LENGTHS = [9, 6, 12, 8, 10, 7]
VICTIM = 2  # the episode number that gets damaged (sequence number VICTIM + 1)


def fill(replay: SequenceReplay, run: str, lengths=LENGTHS) -> dict[int, object]:
    episodes = {n: make_episode(run, n, steps) for n, steps in enumerate(lengths)}
    for episode in episodes.values():
        assert replay.add(episode) is True
    return episodes


def key(replay: SequenceReplay, seq: int, suffix: str) -> str:
    return f"{replay.prefix}e:{seq}:{suffix}"


def garbage(client: redis.Redis, name: str, rng: np.random.Generator) -> None:
    """Random bytes of the same length (guaranteed to differ from the stored ones)."""
    stored = client.get(name)
    noise = rng.integers(0, 256, len(stored), dtype=np.uint8)
    noise[0] = (stored[0] + 1 + int(noise[0]) % 255) % 256  # at least one byte differs
    client.set(name, noise.tobytes())


def flip(client: redis.Redis, name: str, offset: int) -> None:
    stored = client.getrange(name, offset, offset)
    client.setrange(name, offset, bytes([stored[0] ^ 0x40]))


# name -> damage(client, replay, seq, rng); seq's episode has T = LENGTHS[VICTIM] steps
DAMAGE = {
    "o-truncated": lambda c, rp, s, rng: c.set(key(rp, s, "o"), c.get(key(rp, s, "o"))[:48]),  # frame 0 only
    "o-emptied": lambda c, rp, s, rng: c.set(key(rp, s, "o"), b""),
    "o-deleted": lambda c, rp, s, rng: c.delete(key(rp, s, "o")),
    "o-garbage": lambda c, rp, s, rng: garbage(c, key(rp, s, "o"), rng),
    "o-bit-flip": lambda c, rp, s, rng: flip(c, key(rp, s, "o"), 5 * 48 + 20),  # one byte of frame 5
    "a-garbage": lambda c, rp, s, rng: garbage(c, key(rp, s, "a"), rng),
    "r-garbage": lambda c, rp, s, rng: garbage(c, key(rp, s, "r"), rng),
    "d-garbage": lambda c, rp, s, rng: garbage(c, key(rp, s, "d"), rng),
    "c-garbage": lambda c, rp, s, rng: garbage(c, key(rp, s, "c"), rng),
    "a-truncated": lambda c, rp, s, rng: c.set(key(rp, s, "a"), c.get(key(rp, s, "a"))[:-3]),
    "d-deleted": lambda c, rp, s, rng: c.delete(key(rp, s, "d")),
    "c-emptied": lambda c, rp, s, rng: c.set(key(rp, s, "c"), b""),
    "o-wrong-type": lambda c, rp, s, rng: (c.delete(key(rp, s, "o")), c.rpush(key(rp, s, "o"), b"x")),
    "meta-deleted": lambda c, rp, s, rng: c.delete(key(rp, s, "m")),
    "meta-steps-garbage": lambda c, rp, s, rng: c.hset(key(rp, s, "m"), "steps", "12x"),
    "meta-steps-wrong": lambda c, rp, s, rng: c.hset(key(rp, s, "m"), "steps", LENGTHS[VICTIM] + 1),
    "meta-steps-missing": lambda c, rp, s, rng: c.hdel(key(rp, s, "m"), "steps"),
    "meta-id-garbage": lambda c, rp, s, rng: c.hset(key(rp, s, "m"), "id", "no spaces allowed!"),
}


def assert_consistent(replay: SequenceReplay) -> None:
    """The index invariants: stats agree with lens, ids and the stored keys."""
    client = replay._client
    stats = {k.decode(): int(v) for k, v in client.hgetall(replay.prefix + "stats").items()}
    lens = [int(n) for n in client.lrange(replay.prefix + "lens", 0, -1)]
    head, tail = stats.get("head", 1), stats.get("tail", 0)
    assert len(lens) == tail - head + 1
    live = {head + i: steps for i, steps in enumerate(lens) if steps != QUARANTINED}
    assert stats.get("steps", 0) == sum(live.values())
    assert stats.get("bytes", 0) == sum((steps + 1) * SPEC.row_bytes for steps in live.values())
    ids = {int(seq) for seq in client.hgetall(replay.prefix + "ids").values()}
    assert ids == set(live) and stats.get("episodes", 0) == len(live)
    for seq in range(head, tail + 1):
        present = [client.exists(key(replay, seq, suffix)) for suffix in "oardcm"]
        assert present == [int(seq in live)] * 6, f"episode {seq}: keys {present}"


def served(replay: SequenceReplay, episodes, length: int, batches: int, *, with_source: bool) -> set[int]:
    """Sample ``batches`` batches, check every chunk bit-exact; the episode numbers seen."""
    seen = set()
    for _ in range(batches):
        batch = replay.sample(32, length, with_source=with_source)
        found = check_batch(batch, episodes.get, length)
        if with_source:
            assert batch["episode_id"].tolist() == [f"{replay.run}.ep{n:05d}" for n, _ in found]
        seen |= {number for number, _ in found}
    return seen


@pytest.mark.parametrize("length", [1, 3, 6])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_corrupt_episode_is_quarantined_once_and_never_served(redis_server, run_name, kind, length):
    with new_replay(redis_server, run_name, seed=length) as replay:
        episodes = fill(replay, run_name)
        victim = episodes[VICTIM].info.episode_id
        seq = VICTIM + 1
        DAMAGE[kind](replay._client, replay, seq, np.random.default_rng(length))

        with Prefetcher(replay, 32, length, depth=2, workers=2, seed=length) as prefetcher:
            for _ in range(15):  # a prefetcher keeps delivering, and only whole chunks
                check_batch(prefetcher.get(timeout=30), episodes.get, length)
        seen = served(replay, episodes, length, 25, with_source=True)

        records = replay.quarantined()
        assert [(r.seq, r.episode_id) for r in records] == [(seq, victim)], records
        assert records[0].reason and records[0].time > 0
        stats = replay.stats()
        assert stats["replay/corrupt_episodes"] == 1
        assert stats["replay/episodes"] == len(LENGTHS) - 1
        assert victim not in replay.episode_ids()
        assert_consistent(replay)
        # after the quarantine, every other episode is served and the victim never again
        assert served(replay, episodes, length, 10, with_source=False) | seen >= set(episodes) - {VICTIM}
        assert VICTIM not in served(replay, episodes, length, 10, with_source=True)
        assert replay.stats()["replay/corrupt_episodes"] == 1  # exactly once, however often it was met


@pytest.mark.parametrize("kind", sorted(DAMAGE) + ["meta-header-garbage"])
def test_get_episode_verifies_and_quarantines(redis_server, run_name, kind):
    damage = DAMAGE.get(kind) or (lambda c, rp, s, rng: c.hset(key(rp, s, "m"), "header", "{not json"))
    with new_replay(redis_server, run_name) as replay:
        episodes = fill(replay, run_name)
        damage(replay._client, replay, VICTIM + 1, np.random.default_rng(0))
        assert replay.get_episode(episodes[VICTIM].info.episode_id) is None
        assert replay.get_episode(episodes[VICTIM].info.episode_id) is None  # still None, not counted again
        assert replay.stats()["replay/corrupt_episodes"] == 1
        assert [r.seq for r in replay.quarantined()] == [VICTIM + 1]
        for number, episode in episodes.items():
            if number != VICTIM:
                back = replay.get_episode(episode.info.episode_id)
                for name in ("observations", "actions", "rewards", "terminals"):
                    np.testing.assert_array_equal(getattr(back, name), getattr(episode, name))
        assert_consistent(replay)


def test_several_corrupt_episodes_and_an_evicted_one_are_told_apart(redis_server, run_name):
    """Chunks of evicted episodes are redrawn silently; corrupt ones are quarantined; both are redrawn."""
    with new_replay(redis_server, run_name, capacity_steps=60, seed=3) as replay:
        episodes = fill(replay, run_name)  # 52 steps
        client = replay._client
        for seq in (2, 5):
            client.set(key(replay, seq, "r"), b"")
        check_batch(replay.sample(64, 2), episodes.get, 2)
        assert sorted(r.seq for r in replay.quarantined()) == [2, 5]
        more = {n: make_episode(run_name, n, 9) for n in range(10, 13)}  # evicts the oldest, quarantined or not
        for episode in more.values():
            replay.add(episode)
        episodes.update(more)
        for _ in range(10):
            check_batch(replay.sample(64, 2), episodes.get, 2)
        stats = replay.stats()
        assert stats["replay/corrupt_episodes"] == 2
        assert stats["replay/steps"] <= 60
        assert_consistent(replay)


def test_other_samplers_learn_of_a_quarantine_in_the_middle_of_their_index(redis_server, run_name):
    with new_replay(redis_server, run_name) as finder, SequenceReplay(redis_server.url, run_name, seed=2) as other:
        episodes = fill(finder, run_name)
        check_batch(other.sample(32, 2), episodes.get, 2)  # its index holds every episode
        garbage(finder._client, key(finder, VICTIM + 1, "o"), np.random.default_rng(0))
        assert finder.get_episode(episodes[VICTIM].info.episode_id) is None  # found and quarantined elsewhere
        assert other._refresh(other._connection()).steps_of(VICTIM + 1) == QUARANTINED
        for _ in range(20):
            found = check_batch(other.sample(32, 2), episodes.get, 2)
            assert VICTIM not in {number for number, _ in found}
        assert other.stats()["replay/redrawn_chunks"] == 0  # it never even drew the quarantined episode


def test_quarantine_is_idempotent_and_ignores_evicted_or_wiped(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        fill(replay, run_name)
        connection = replay._connection()
        replay._refresh(connection)
        assert replay._quarantine(3, "test", replay._epoch, connection) is True
        assert replay._quarantine(3, "test", replay._epoch, connection) is False  # done before
        assert replay._quarantine(3, "test", replay._epoch) is False  # through redis-py too
        assert replay._quarantine(4, "test", b"another epoch", connection) is False  # the namespace changed
        assert replay._quarantine(99, "test", replay._epoch, connection) is False  # not in the index
        assert replay.stats()["replay/corrupt_episodes"] == 1
        assert_consistent(replay)


# ---------------------------------------------------------------- scripts fed unusable state

def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every key of the namespace and its serialised value (type included)."""
    return {name: client.dump(name) for name in client.scan_iter(match=prefix + "*", count=1000)}


def assert_refused(action, client, prefix, *, match: str, garbage: bytes | None = None) -> ReplayError:
    """``action`` raises a short ReplayError matching ``match`` and changes nothing in the namespace."""
    before = snapshot(client, prefix)
    with pytest.raises(ReplayError, match=match) as info:
        action()
    message = str(info.value)
    assert len(message) <= MESSAGE_LIMIT, message
    if garbage is not None:
        assert garbage.decode(errors="replace")[:20] not in message
    assert snapshot(client, prefix) == before, "a refused call wrote to the namespace"
    return info.value


@pytest.mark.parametrize("damage", ["steps-garbage", "steps-wrong", "bytes-garbage", "id-garbage", "deleted",
                                    "wrong-type"])
def test_eviction_survives_bad_metadata_of_the_evicted(redis_server, run_name, damage):
    """The ADD script takes the length from lens and the size from the spec; counts the episode corrupt."""
    with new_replay(redis_server, run_name, capacity_steps=40, seed=1) as replay:
        episodes = fill(replay, run_name, [9, 8, 10, 7])  # 34 steps; the next adds evict episode 0 (seq 1)
        client = replay._client
        meta = key(replay, 1, "m")
        {"steps-garbage": lambda: client.hset(meta, "steps", "nine"),
         "steps-wrong": lambda: client.hset(meta, "steps", 3),
         "bytes-garbage": lambda: client.hset(meta, "bytes", "-"),
         "id-garbage": lambda: client.hset(meta, "id", f"{run_name}.ep00002"),  # another episode's id
         "deleted": lambda: client.delete(meta),
         "wrong-type": lambda: (client.delete(meta), client.set(meta, "x"))}[damage]()
        for number in range(10, 16):
            episodes[number] = make_episode(run_name, number, 9)
            assert replay.add(episodes[number]) is True
        stats = replay.stats()
        assert stats["replay/corrupt_episodes"] == 1 and stats["replay/steps"] <= 40
        assert [r.seq for r in replay.quarantined()] == [1]
        assert f"{run_name}.ep00000" not in replay.episode_ids()
        assert_consistent(replay)
        for _ in range(5):
            check_batch(replay.sample(32, 4, with_source=True), episodes.get, 4)
        assert replay.get_episode(f"{run_name}.ep00002") is None  # evicted long since, whatever a bad hash said


STATE_DAMAGE = {  # name -> (damage(client, prefix), what the error says after the namespace prefix)
    "lens-garbage": (lambda c, p: c.lset(p + "lens", 0, b"\x00garbage" * 40_000), "lens entry 0"),
    "lens-negative": (lambda c, p: c.lset(p + "lens", 0, -7), "lens entry 0"),
    "lens-short": (lambda c, p: c.lpop(p + "lens"), "lens holds 3 lengths"),
    "stats-steps-garbage": (lambda c, p: c.hset(p + "stats", "steps", b"\xff" * 100_000), "stats field steps"),
    "stats-head-garbage": (lambda c, p: c.hset(p + "stats", "head", "1.5"), "stats field head"),
    "stats-inserts-garbage": (lambda c, p: c.hset(p + "stats", "inserts", "many"), "stats field inserts"),
    "stats-wrong-type": (lambda c, p: (c.delete(p + "stats"), c.set(p + "stats", "x")), "stats is a string"),
    "spec-not-json": (lambda c, p: c.hset(p + "config", "spec", b"{\xff" * 50_000), "config field spec"),
    "spec-bad-frame": (lambda c, p: c.hset(p + "config", "spec", SPEC.to_json().replace("[4,4,3]", "[4,0,3]")),
                       "config field spec"),
    "capacity-garbage": (lambda c, p: c.hset(p + "config", "capacity", "lots"), "config field capacity"),
    "ids-wrong-type": (lambda c, p: (c.delete(p + "ids"), c.set(p + "ids", "x")), "ids is a string"),
}


@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_scripts_refuse_unusable_state_and_write_nothing(redis_server, run_name, damage):
    with new_replay(redis_server, run_name, capacity_steps=40) as replay:
        episodes = fill(replay, run_name, [9, 8, 10, 7])
        client, prefix = replay._client, replay.prefix
        corrupt, says = STATE_DAMAGE[damage]
        connection = replay._connection()
        replay._refresh(connection)  # (the sampler knows the epoch a quarantine needs)
        sampler = SequenceReplay(redis_server.url, run_name)  # one that loads the whole index after the damage
        corrupt(client, prefix)
        match = re.escape(f"cannot use its stored state: {prefix}{says}")
        big = make_episode(run_name, 20, 12)  # must evict: the eviction path reads lens and metadata
        assert_refused(lambda: replay.add(big), client, prefix, match=match)
        if damage not in ("capacity-garbage", "ids-wrong-type"):  # (sampling reads neither)
            with sampler:
                assert_refused(lambda: sampler.sample(4, 2), client, prefix, match=match)
        if damage != "capacity-garbage":  # (a quarantine does not read the capacity)
            assert_refused(lambda: replay._quarantine(1, "test", replay._epoch, connection), client, prefix,
                           match=match)
        if not damage.startswith("stats"):
            assert replay.stats()["replay/corrupt_episodes"] == 0  # refused calls quarantined nothing
        if damage.startswith("lens"):  # repaired, everything works again
            client.delete(prefix + "lens")
            client.rpush(prefix + "lens", *[episode.length for episode in episodes.values()])
            assert replay.add(big) is True
            check_batch(replay.sample(16, 3), {**episodes, 20: big}.get, 3)
            assert_consistent(replay)


def test_refused_messages_are_short_and_quote_no_stored_bytes(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        fill(replay, run_name)
        client, prefix = replay._client, replay.prefix
        client.lset(prefix + "lens", 1, b"X" * 1_000_000)
        error = assert_refused(lambda: replay.sample(8, 2), client, prefix, match="lens entry 1 is not")
        assert "XXXXXXXXXX" not in str(error)
        client.lset(prefix + "lens", 1, LENGTHS[1])
        client.hset(prefix + "config", "spec", "S" * 1_000_000)
        with pytest.raises(ReplayError) as info:
            SequenceReplay(redis_server.url, run_name)
        assert len(str(info.value)) <= MESSAGE_LIMIT and "SSSSSSSSSS" not in str(info.value)
