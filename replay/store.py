"""SequenceReplay: episodes in, uniformly drawn (B, L) chunks out, through one Redis server.

Writes. ``add`` validates the episode (and that it belongs to this run), then one Lua
script (replay/scripts.py ADD) does everything atomically: skip an id already seen
(idempotent retries), check the run's frame/action spec and capacity, evict the oldest
whole episodes until the new one fits, store the arrays under a fresh sequence number,
update the index and counters. A rejected episode stores nothing.

Reads. ``sample`` keeps a local :class:`~replay.index.ChunkIndex` (sequence numbers and
lengths), refreshed by one small script call per batch, draws B (episode, start) pairs
uniformly over all valid starts, and fetches exactly the chunk rows: one pipeline of
GETRANGEs per batch (frames, actions, rewards, terminals of every chunk), read straight
into the batch arrays (replay/wire.py). Why this is safe with concurrent writers: keys are
named by sequence number and never reused, and an eviction deletes all of an episode's keys
in one atomic script, so every GETRANGE returns the exact bytes of the episode it names or
an empty string; a chunk with any empty piece (evicted between index refresh and fetch) is
dropped and redrawn from a refreshed index. No torn chunk can be returned, and samplers
never take locks or WATCH keys that writers touch.

Why not a server-side sorted set of cumulative starts: the starts depend on L, eviction
would renumber every entry, and a ZRANGEBYSCORE per chunk costs a round trip; the local
index costs one round trip per batch and O(new episodes) bytes.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import warnings
from typing import Any

import numpy as np
import redis

from common.episode import Episode, EpisodeError, EpisodeInfo, decode, encode_header
from replay import scripts
from replay.errors import ReplayConnectionError, ReplayEmptyError, ReplayError
from replay.index import ChunkIndex
from replay.server import Address, auth_error, check, connect
from replay.wire import RespConnection, RespError

_RUN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MAX_ROUNDS = 8  # fetch rounds per batch before giving up (each redraws chunks of evicted episodes)
_COUNTERS = ("episodes", "steps", "bytes", "inserts", "inserted_steps", "evictions", "evicted_steps",
             "rejected", "duplicates", "samples", "sampled_steps")
_ACTION_DTYPES = {"<f4": np.dtype("<f4"), "<i8": np.dtype("<i8")}


class SequenceReplay:
    """The replay of one run: ``add(episode)``, ``sample(B, L)``, ``stats()``, ``close()``.

    Thread-safe: each thread samples through its own connection (``sample`` from N threads
    overlaps N fetches). Processes each construct their own instance from the URL.
    """

    def __init__(self, url_or_client: str | Address | redis.Redis, run: str, *, capacity_steps: int | None = None,
                 seed: int | None = None):
        """Connect to the replay of ``run`` (keys ``orrery:<run>:``).

        ``capacity_steps``: agent steps kept (FIFO eviction of whole episodes beyond). The
        first process of a run sets it; later ones must pass the same value or None (a
        sampler need not know it). ``seed`` seeds the default sampling generator.
        """
        if not isinstance(run, str) or not _RUN.fullmatch(run):
            raise ReplayError(f"run name {run!r} cannot name a replay namespace: use 1..128 characters from "
                              f"[A-Za-z0-9_.-] (the run directory's name usually is)")
        if capacity_steps is not None and (isinstance(capacity_steps, bool) or not isinstance(capacity_steps, int)
                                           or capacity_steps < 1):
            raise ReplayError(f"capacity_steps must be a positive integer (agent steps), got {capacity_steps!r}")
        self.run = run
        self.prefix = f"orrery:{run}:"
        if isinstance(url_or_client, redis.Redis):
            self._client, self._owns_client = url_or_client, False
            check(self._client)
        else:
            self._client = connect(url_or_client)
            self._owns_client = True
        self._address = Address.from_client(self._client)
        self._keys = {name: self.prefix + name for name in ("config", "stats", "seen", "ids", "lens")}
        self._add_script = self._client.register_script(scripts.ADD)
        self._index_sha = self._client.script_load(scripts.INDEX)
        self.capacity_steps = self._set_up(capacity_steps)
        self._check_eviction_policy()

        self._lock = threading.Lock()
        self._index = ChunkIndex()
        self._epoch: bytes | None = None  # the namespace's epoch the index belongs to
        self._spec: dict[str, Any] | None = None
        self._local = threading.local()
        self._connections: list[RespConnection] = []
        self._seeds = np.random.SeedSequence(seed)
        self._last_stats: tuple[float, dict[str, int]] = (time.monotonic(), self._counters())
        self._redrawn = 0  # chunks of episodes evicted between index refresh and fetch, drawn again
        self._closed = False

    # ------------------------------------------------------------ writing

    def add(self, episode: Episode | bytes | bytearray | memoryview) -> bool:
        """Store one episode atomically; True if stored, False if its id was stored before.

        Accepts an Episode or its encoded bytes. Raises EpisodeError naming the reason for a
        malformed episode, one of another run, one whose frames or actions differ from the
        run's, or one longer than the capacity; nothing of it is stored. Safe to retry after
        a connection error: a retry of a write that did land returns False.
        """
        if isinstance(episode, (bytes, bytearray, memoryview)):
            try:
                episode = decode(episode)
            except EpisodeError as error:
                self._count_rejected()
                raise EpisodeError(f"replay.add: rejected malformed episode bytes: {error}") from None
        elif not isinstance(episode, Episode):
            raise TypeError(f"replay.add: expected an Episode or its encoded bytes, got {type(episode).__name__}")
        info = episode.info
        try:
            episode.validate()
            if info.run != self.run:
                raise EpisodeError(f"episode {info.episode_id!r} belongs to run {info.run!r}, this replay holds run "
                                   f"{self.run!r} (keys {self.prefix}*); write it through "
                                   f"SequenceReplay(url, {info.run!r}) or fix EpisodeInfo.run")
        except EpisodeError as error:
            self._count_rejected()
            raise EpisodeError(f"replay.add rejected episode {info.episode_id!r}: {error}") from None

        spec = _spec_of(episode)
        arrays = _aligned(episode)
        header = json.dumps(encode_header(episode), separators=(",", ":"))
        nbytes = sum(part.nbytes for part in arrays)
        keys = [self._keys[name] for name in ("config", "stats", "seen", "ids", "lens")]
        args = [self.prefix, info.episode_id, episode.length, nbytes, spec, header, *arrays]
        try:
            status, _, detail = self._add_script(keys=keys, args=args)
        except redis.AuthenticationError as error:
            raise auth_error(self._address, error) from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise ReplayConnectionError(f"replay.add of episode {info.episode_id!r} to {self._address.where} "
                                        f"failed: {error}; adding is idempotent: retry with the same episode") from None
        if status == 1:
            return True
        if status == 0:
            return False
        detail = detail.decode() if isinstance(detail, bytes) else str(detail)
        if status == -2:
            raise ReplayError(f"replay of run {self.run!r} has no capacity set; construct one SequenceReplay with "
                              f"capacity_steps=replay.capacity_steps before adding episodes")
        reason, _, value = detail.partition(" ")
        if reason == "spec":
            raise EpisodeError(f"replay.add rejected episode {info.episode_id!r}: its {_describe_spec(spec)} differ "
                               f"from the run's {_describe_spec(value)}; one run holds episodes of one task with "
                               f"one frame size (start a new run for another task)")
        raise EpisodeError(f"replay.add rejected episode {info.episode_id!r}: T={episode.length} steps exceed the "
                           f"replay capacity of {value} steps; raise replay.capacity_steps or split the episode")

    # ------------------------------------------------------------ sampling

    def sample(self, batch: int, length: int, rng: np.random.Generator | None = None, *,
               with_source: bool = False) -> dict[str, np.ndarray]:
        """B chunks of L consecutive frames, uniform over all valid starts of all stored episodes.

        Returns batch-major arrays, chunk b covering frames k .. k+L-1 of its episode::

            observations (B, L, H, W, C) uint8    o_k .. o_{k+L-1}
            actions      (B, L, A) float32        a_{k-1} .. a_{k+L-2} (zero at index 0 when k = 0);
                         (B, L) int64 for discrete actions
            rewards      (B, L) float32           r_{k-1} .. r_{k+L-2} (0 at index 0 when k = 0)
            terminals    (B, L) bool              whether o_t is terminal (False at index 0 when k = 0)
            is_first     (B, L) bool              True where the chunk holds o_0 of its episode

        ``with_source`` adds ``episode_id`` (B,) str and ``start`` (B,) int64 (k).
        Raises ReplayEmptyError when no stored episode has L frames.
        """
        for name, value in (("batch", batch), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"sample: {name} must be a positive integer, got {value!r}")
        batch, length = int(batch), int(length)
        rng = rng if rng is not None else self._thread_rng()
        connection = self._connection()
        try:
            return self._sample(connection, batch, length, rng, with_source)
        except ReplayConnectionError:  # one reconnect: a restarted server or a dropped socket
            return self._sample(connection, batch, length, rng, with_source)

    def _sample(self, connection: RespConnection, batch: int, length: int, rng: np.random.Generator,
                with_source: bool) -> dict[str, np.ndarray]:
        spec = self._load_spec(connection)
        frame = tuple(spec["frame"])
        action_dtype = _ACTION_DTYPES[spec["action_dtype"]]
        action_shape = tuple(spec["action_shape"])
        out = {
            "observations": np.empty((batch, length, *frame), np.uint8),
            "actions": np.empty((batch, length, *action_shape), action_dtype),
            "rewards": np.empty((batch, length), np.dtype("<f4")),
            "terminals": np.empty((batch, length), np.bool_),
        }
        pieces = [("o", out["observations"]), ("a", out["actions"]), ("r", out["rewards"]), ("d", out["terminals"])]
        rows = [(suffix, array.reshape(batch, -1).view(np.uint8), array[0, 0].nbytes) for suffix, array in pieces]
        seqs = np.zeros(batch, np.int64)
        starts = np.zeros(batch, np.int64)
        ids: list[Any] = [None] * batch
        todo = np.arange(batch)
        for round_ in range(_MAX_ROUNDS):
            index = self._refresh(connection)
            drawn_seqs, drawn_starts = index.draw(len(todo), length, rng)
            seqs[todo], starts[todo] = drawn_seqs, drawn_starts
            commands: list[tuple] = []
            sinks: list[memoryview | None] = []
            for b, seq, start in zip(todo.tolist(), drawn_seqs.tolist(), drawn_starts.tolist()):
                key = f"{self.prefix}e:{seq}:"
                for suffix, flat, row in rows:
                    commands.append(("GETRANGE", key + suffix, start * row, (start + length) * row - 1))
                    sinks.append(memoryview(flat[b]))
                if with_source:
                    commands.append(("HGET", key + "m", "id"))
                    sinks.append(None)
            if round_ == 0:  # the limiter's and stats' counters, in the same round trip
                commands += [("HINCRBY", self._keys["stats"], "samples", 1),
                             ("HINCRBY", self._keys["stats"], "sampled_steps", batch * length)]
                sinks += [None, None]
            replies = connection.pipeline(commands, sinks)
            per_chunk = len(rows) + with_source
            missing = []
            for i, b in enumerate(todo.tolist()):
                got = replies[i * per_chunk:(i + 1) * per_chunk]
                if all(reply is True for reply in got[:len(rows)]) and (not with_source or got[-1] is not None):
                    if with_source:
                        ids[b] = got[-1].decode()
                elif any(isinstance(reply, (bytes, type(None))) and not reply for reply in got):
                    missing.append(b)  # evicted after the index refresh: draw again
                else:
                    raise ReplayError(f"replay of run {self.run!r}: episode {int(seqs[b])} returned {got!r} for a "
                                      f"chunk of {length} rows at {int(starts[b])}; the stored data is corrupt")
            if not missing:
                break
            with self._lock:
                self._redrawn += len(missing)
            todo = np.asarray(missing)
        else:
            raise ReplayError(f"sample: chunks kept disappearing for {_MAX_ROUNDS} rounds; episodes are evicted "
                              f"faster than they can be read (capacity_steps too small for the insert rate?)")
        is_first = np.zeros((batch, length), np.bool_)
        is_first[:, 0] = starts == 0
        out["is_first"] = is_first
        if with_source:
            out["episode_id"] = np.asarray(ids, dtype=str)
            out["start"] = starts
        return out

    def _refresh(self, connection: RespConnection) -> ChunkIndex:
        """Bring the shared local index up to date with the server (one small script call)."""
        behind = 0
        for attempt in range(5):
            full = attempt == 4 or behind >= 2  # reload everything rather than loop
            known = ChunkIndex() if full else self._index
            args = (3, self._keys["stats"], self._keys["lens"], self._keys["config"], known.tail)
            try:
                reply = connection.call("EVALSHA", self._index_sha, *args)
            except RespError as error:
                if not str(error).startswith("NOSCRIPT"):  # (a restarted server has no scripts cached)
                    raise ReplayError(f"replay index script failed on {self._address.where}: {error}") from None
                reply = connection.call("EVAL", scripts.INDEX, *args)
            head, tail, first, steps, epoch = reply
            with self._lock:
                if epoch != self._epoch:  # first contact, or the namespace was wiped (and maybe refilled)
                    if self._epoch is not None:
                        self._spec = None
                    self._epoch, self._index = epoch, ChunkIndex()
                    if known.tail != 0:
                        continue  # the reply was relative to data that is gone
                base = known if full else self._index
                if not full and (head < base.head or tail < base.tail):
                    behind += 1  # another thread applied a newer state, or the server lost data: ask again
                    continue
                if first == max(base.tail + 1, head):  # else another thread moved the index: ask again
                    self._epoch = epoch
                    self._index = base.updated(head, tail, first, [int(n) for n in steps])
                    return self._index
        raise AssertionError("unreachable: a reload from an empty index always applies")

    def _load_spec(self, connection: RespConnection) -> dict[str, Any]:
        if self._spec is None:
            raw = connection.call("HGET", self._keys["config"], "spec")
            if raw is None:
                raise ReplayEmptyError(f"replay of run {self.run!r} holds no episode yet; wait for the actors "
                                       f"(the limiter's min_size) before sampling")
            self._spec = json.loads(raw)
        return self._spec

    # ------------------------------------------------------------ reading episodes back

    def get_episode(self, episode_id: str) -> Episode | None:
        """The whole stored episode ``episode_id`` (None if never stored or evicted); for tools and tests."""
        seq = self._client.hget(self._keys["ids"], episode_id)
        if seq is None:
            return None
        key = f"{self.prefix}e:{int(seq)}:"
        pipe = self._client.pipeline(transaction=True)
        for suffix in "oard":
            pipe.get(key + suffix)
        pipe.hget(key + "m", "header")
        *raw, header = pipe.execute()
        if header is None or any(part is None for part in raw):
            return None  # evicted between the two reads
        header = json.loads(header)
        arrays = {}
        for (name, spec), data, shift in zip([(s["name"], s) for s in header["arrays"]], raw, (0, 1, 1, 1)):
            dtype = np.dtype(spec["dtype"])
            shape = tuple(spec["shape"])
            stored = np.frombuffer(data, dtype).reshape((shape[0] + shift, *shape[1:]))
            arrays[name] = stored[shift:].astype(dtype.newbyteorder("="))  # drop the alignment row; copy
        return Episode(info=EpisodeInfo.from_json(header["info"]), **arrays)

    def episode_ids(self) -> list[str]:
        """Ids of the stored episodes, oldest first."""
        pairs = self._client.hgetall(self._keys["ids"])
        return [key.decode() for key, _ in sorted(pairs.items(), key=lambda item: int(item[1]))]

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, float]:
        """``replay/*`` metrics: contents (episodes, steps, bytes), counters, and rates since the last call."""
        now, counters = time.monotonic(), self._counters()
        before, previous = self._last_stats
        self._last_stats = (now, counters)
        elapsed = max(now - before, 1e-9)
        metrics: dict[str, float] = {f"replay/{name}": value for name, value in counters.items()}
        metrics["replay/capacity_steps"] = self.capacity_steps or 0
        metrics["replay/redrawn_chunks"] = self._redrawn  # this client's, not the server's
        for name, counter in (("inserts", "inserts"), ("inserted_steps", "inserted_steps"),
                              ("samples", "samples"), ("sampled_steps", "sampled_steps")):
            metrics[f"replay/{name}_per_s"] = (counters[counter] - previous[counter]) / elapsed
        return metrics

    def _counters(self) -> dict[str, int]:
        raw = self._client.hmget(self._keys["stats"], list(_COUNTERS))
        return {name: int(value or 0) for name, value in zip(_COUNTERS, raw)}

    def counts(self) -> tuple[int, int]:
        """(inserted steps, sampled steps) so far: the samples-per-insert limiter's two counters."""
        inserted, sampled = self._client.hmget(self._keys["stats"], ["inserted_steps", "sampled_steps"])
        return int(inserted or 0), int(sampled or 0)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close this instance's connections (the server and its data stay)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SequenceReplay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _set_up(self, capacity_steps: int | None) -> int | None:
        config = self._keys["config"]
        pipe = self._client.pipeline(transaction=True)
        pipe.hsetnx(config, "format", scripts.FORMAT)
        pipe.hsetnx(config, "epoch", secrets.token_hex(8))
        if capacity_steps is not None:
            pipe.hsetnx(config, "capacity", capacity_steps)
        pipe.hmget(config, ["format", "capacity"])
        stored_format, stored_capacity = pipe.execute()[-1]
        if stored_format.decode() != scripts.FORMAT:
            raise ReplayError(f"replay of run {self.run!r} at {self._address.where} has layout "
                              f"{stored_format.decode()!r}, this code reads {scripts.FORMAT!r}; use a new run name")
        stored = int(stored_capacity) if stored_capacity is not None else None
        if capacity_steps is not None and stored != capacity_steps:
            raise ReplayError(f"replay of run {self.run!r} was created with capacity_steps={stored}, this process "
                              f"asks for {capacity_steps}; use the run's value (replay.capacity_steps in its "
                              f"config.yaml) or a new run name")
        return stored

    def _check_eviction_policy(self) -> None:
        try:
            policy = self._client.config_get("maxmemory-policy").get("maxmemory-policy", "noeviction")
        except redis.RedisError:
            return  # CONFIG is disabled on some managed servers
        if policy != "noeviction":
            warnings.warn(f"Redis at {self._address.where} has maxmemory-policy {policy}: it may delete replay "
                          f"episodes on its own; set maxmemory-policy noeviction", stacklevel=3)

    def _count_rejected(self) -> None:
        try:
            self._client.hincrby(self._keys["stats"], "rejected", 1)
        except redis.RedisError:
            pass  # the rejection itself is what the caller needs to see

    def _connection(self) -> RespConnection:
        if self._closed:
            raise ReplayError("sample on a closed SequenceReplay")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = RespConnection(self._address)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _thread_rng(self) -> np.random.Generator:
        rng = getattr(self._local, "rng", None)
        if rng is None:
            with self._lock:
                rng = self._local.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        return rng


def _aligned(episode: Episode) -> list[memoryview]:
    """The four arrays as stored: frames as they are; actions, rewards, terminals shifted to frame rows."""
    actions = episode.actions.astype(episode.actions.dtype.newbyteorder("<"), copy=False)
    rows = [
        episode.observations,
        np.concatenate([np.zeros_like(actions[:1]), actions]),  # row t: a_{t-1}
        np.concatenate([np.zeros(1, "<f4"), episode.rewards.astype("<f4", copy=False)]),  # row t: r_{t-1}
        np.concatenate([np.zeros(1, np.bool_), episode.terminals]),  # row t: o_t is terminal
    ]
    return [np.ascontiguousarray(array).reshape(-1).view(np.uint8).data for array in rows]


def _spec_of(episode: Episode) -> str:
    """What every episode of a run shares, as canonical JSON: frame shape, action dtype and shape."""
    return json.dumps({"frame": list(episode.observations.shape[1:]),
                       "action_dtype": "<i8" if episode.discrete else "<f4",
                       "action_shape": list(episode.actions.shape[1:])}, sort_keys=True)


def _describe_spec(spec: str) -> str:
    try:
        value = json.loads(spec)
        kind = "discrete actions" if value["action_dtype"] == "<i8" else f"actions of size {value['action_shape']}"
        return f"frames {tuple(value['frame'])} and {kind}"
    except (ValueError, KeyError, TypeError):
        return spec
