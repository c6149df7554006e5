"""SequenceReplay: episodes in, uniformly drawn (B, L) chunks out, through one Redis server.

Setup. The process that creates a run's replay (the run driver) passes ``capacity_steps`` and
``spec`` (:class:`~replay.spec.ReplaySpec`, from the run's environment); both are stored once
and every later process must agree or pass neither. Nothing can be added before both are set.

Writes. ``add`` validates the episode (and that it belongs to this run), computes its row
checksums (replay/checksum.py), then one Lua script (replay/scripts.py ADD) does everything
atomically: skip an id already seen (idempotent retries), compare the episode with the run's
stored spec and capacity, evict the oldest whole episodes until the new one fits, store the
arrays under a fresh sequence number, update the index and counters. A rejected episode stores
nothing; a script that finds unusable state writes nothing and says which key is wrong.

Reads. ``sample`` keeps a local :class:`~replay.index.ChunkIndex` (sequence numbers and
lengths), refreshed by one small script call per batch, draws B (episode, start) pairs
uniformly over all valid starts, and fetches exactly the chunk rows: one pipeline per batch,
read straight into the batch arrays and verified row by row against the stored checksums
(replay/chunks.py). Why this is safe with concurrent writers: keys are named by sequence
number and never reused, and an eviction deletes all of an episode's keys in one atomic script
that also removes it from the index, so every GETRANGE returns the exact bytes of the episode
it names or an empty string. A chunk that is not whole is told apart after an index refresh:
its episode is gone from the index (seq < head: evicted, drawn again silently), or it is still
there, so its data are corrupt: the QUARANTINE script takes the episode out of service (counted
in ``replay/corrupt_episodes``) and the chunk is drawn again. No torn or corrupt chunk is ever
returned, and samplers never take locks or WATCH keys that writers touch.

Why not a server-side sorted set of cumulative starts: the starts depend on L, eviction
would renumber every entry, and a ZRANGEBYSCORE per chunk costs a round trip; the local
index costs one round trip per batch and O(new episodes) bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import redis

from common.episode import Episode, EpisodeError, decode, encode_header
from replay import scripts
from replay.checksum import row_checksums
from replay.chunks import PER_CHUNK, ChunkBatch
from replay.errors import NOT_READY, ReplayConnectionError, ReplayEmptyError, ReplayError, bounded
from replay.index import QUARANTINED, ChunkIndex
from replay.parse import (
    BadEntry, QuarantineRecord, as_text, lengths, quarantine_records, rebuild_episode, strict_int,
)
from replay.server import Address, auth_error, check, connect
from replay.spec import ReplaySpec
from replay.wire import RespConnection, RespError, not_ready_message

_RUN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MAX_ROUNDS = 8  # fetch rounds per batch before giving up (each redraws chunks that were not whole)
_COUNTERS = ("episodes", "steps", "bytes", "inserts", "inserted_steps", "evictions", "evicted_steps",
             "rejected", "duplicates", "corrupt_episodes", "samples", "sampled_steps")
_KEYS = ("config", "stats", "seen", "ids", "lens", "quarantine")
_SHAS = {name: hashlib.sha1(getattr(scripts, name).encode()).hexdigest() for name in ("INDEX", "QUARANTINE")}
_log = logging.getLogger(__name__)


class SequenceReplay:
    """The replay of one run: ``add(episode)``, ``sample(B, L)``, ``stats()``, ``close()``.

    Thread-safe: each thread samples through its own connection (``sample`` from N threads
    overlaps N fetches). Processes each construct their own instance from the URL.
    """

    def __init__(self, url_or_client: str | Address | redis.Redis, run: str, *, capacity_steps: int | None = None,
                 spec: ReplaySpec | None = None, seed: int | None = None):
        """Connect to the replay of ``run`` (keys ``orrery:<run>:``).

        ``url_or_client``: ``redis://:PASSWORD@HOST:PORT/DB``, a Unix socket's
        ``unix:///PATH?db=N&password=PASSWORD`` (the embedded server's ``unix_url``: the learner's
        fast way in on its node; the sampler then reads over the socket too), an Address, or a redis-py client.

        ``capacity_steps`` (agent steps kept; FIFO eviction of whole episodes beyond) and
        ``spec`` (task, frame, actions of every episode): the process that creates the run's
        replay passes both, from the run's config; they are stored once, and a later process
        that passes another value gets a ReplayError. Processes that only add or sample
        (actors, the learner) pass neither. ``seed`` seeds the default sampling generator.
        """
        if not isinstance(run, str) or not _RUN.fullmatch(run):
            raise ReplayError(bounded(f"run name {run!r} cannot name a replay namespace: use 1..128 characters "
                                      f"from [A-Za-z0-9_.-] (the run directory's name usually is)"))
        if capacity_steps is not None and (isinstance(capacity_steps, bool) or not isinstance(capacity_steps, int)
                                           or capacity_steps < 1):
            raise ReplayError(bounded(f"capacity_steps must be a positive integer (agent steps), got "
                                      f"{capacity_steps!r}"))
        if spec is not None and not isinstance(spec, ReplaySpec):
            raise TypeError(f"spec: expected a ReplaySpec (ReplaySpec.for_env(env.spec)), got {type(spec).__name__}")
        self.run = run
        self.prefix = f"orrery:{run}:"
        if isinstance(url_or_client, redis.Redis):
            self._client, self._owns_client = url_or_client, False
            check(self._client)
        else:
            self._client = connect(url_or_client)
            self._owns_client = True
        self._address = Address.from_client(self._client)
        self._keys = {name: self.prefix + name for name in _KEYS}
        self._add_script = self._client.register_script(scripts.ADD)
        self._quarantine_script = self._client.register_script(scripts.QUARANTINE)
        self._episode_script = self._client.register_script(scripts.EPISODE)
        self.capacity_steps, self.spec = self._set_up(capacity_steps, spec)
        self._check_eviction_policy()

        self._lock = threading.Lock()
        self._index = ChunkIndex()
        self._epoch: bytes | None = None  # the namespace's epoch the index belongs to
        self._corrupt: int | None = None  # the corrupt_episodes count the index reflects
        self._spec: ReplaySpec | None = None  # the spec samplers use (reloaded when the epoch changes)
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
        malformed episode, one of another run, one whose task, frames or actions differ from the
        run's spec, or one longer than the capacity; nothing of it is stored. Raises ReplayError
        while the run has no capacity or spec set. Safe to retry after a connection error: a
        retry of a write that did land returns False.
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

        mine = ReplaySpec.of_episode(episode)
        rows = _aligned(episode)
        checksums = row_checksums(*rows)
        header = json.dumps(encode_header(episode), separators=(",", ":"))
        nbytes = sum(part.nbytes for part in rows)
        keys = [self._keys[name] for name in _KEYS]
        args = [self.prefix, info.episode_id, episode.length, nbytes, mine.to_json(), header,
                *(part.reshape(-1).data for part in rows), checksums.view(np.uint8).data, repr(time.time())]
        reply = self._redis(f"replay.add of episode {info.episode_id!r}",
                            lambda: self._add_script(keys=keys, args=args),
                            "adding is idempotent: retry with the same episode")
        status, *rest = reply
        if status == 1:
            if rest[2]:
                _log.warning("replay of run %r: %d evicted episode(s) had bad metadata (counted in "
                             "replay/corrupt_episodes)", self.run, rest[2])
            return True
        if status == 0:
            return False
        if status == -3:
            raise self._state_error(rest)
        what = as_text(rest[0])
        if status == -2:
            setting = "capacity_steps=replay.capacity_steps" if what == "capacity" else "spec=ReplaySpec.for_env(env)"
            raise ReplayError(f"replay of run {self.run!r} has no {what} set; the run driver creates it with "
                              f"SequenceReplay(url, run, capacity_steps=..., spec=...) ({setting}) before any "
                              f"episode is added")
        if what == "capacity":
            raise EpisodeError(f"replay.add rejected episode {info.episode_id!r}: T={episode.length} steps exceed the "
                               f"replay capacity of {int(rest[1])} steps; raise replay.capacity_steps or split "
                               f"the episode")
        stored = ReplaySpec.from_json(rest[1], f"{self._keys['config']} field spec")
        raise EpisodeError(bounded(
            f"replay.add rejected episode {info.episode_id!r}: its {mine.describe(what)} "
            f"{'differs' if what == 'task' else 'differ'} from the run's "
            f"{stored.describe(what)}; one run holds episodes of one task, frame size and action space, set by "
            f"its config (start a new run for another task)"))

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

        ``with_source`` adds ``episode_id`` (B,) str and ``start`` (B,) int64 (k). Every chunk
        is verified against its row checksums; corrupt episodes are quarantined and their chunks
        drawn again. Raises ReplayEmptyError when no stored episode has L frames.
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
        seqs = np.zeros(batch, np.int64)
        starts = np.zeros(batch, np.int64)
        epoch: bytes | None = None
        chunks: ChunkBatch | None = None
        todo = np.arange(batch)
        for round_ in range(_MAX_ROUNDS):
            index = self._refresh(connection)
            if chunks is None or self._epoch != epoch:  # first round, or the namespace was wiped: (re)start
                epoch, spec = self._epoch, self._load_spec(connection)
                if chunks is None or chunks.spec != spec:
                    chunks = ChunkBatch(spec, batch, length, with_source)
                todo = np.arange(batch)
            drawn_seqs, drawn_starts = index.draw(len(todo), length, rng)
            seqs[todo], starts[todo] = drawn_seqs, drawn_starts
            work = list(zip(todo.tolist(), drawn_seqs.tolist(), drawn_starts.tolist()))
            commands, sinks, callbacks = chunks.commands(self.prefix, work)
            if round_ == 0:  # the limiter's and stats' counters, in the same round trip
                commands += [("HINCRBY", self._keys["stats"], "samples", 1),
                             ("HINCRBY", self._keys["stats"], "sampled_steps", batch * length)]
                sinks += [None, None]
                callbacks += [None, None]
            replies = connection.pipeline(commands, sinks, callbacks, window=PER_CHUNK)  # (one chunk a group)
            if round_ == 0 and any(isinstance(reply, RespError) for reply in replies[-2:]):
                raise self._state_error([self._keys["stats"], "fields samples, sampled_steps are not integers"])
            suspects = chunks.verify(replies, work, index.steps_of(drawn_seqs), self._address.where)
            if not suspects:
                break
            todo = self._settle(connection, suspects, seqs, epoch)
        else:
            raise ReplayError(f"sample: chunks kept failing for {_MAX_ROUNDS} rounds; episodes are evicted "
                              f"faster than they can be read (capacity_steps too small for the insert rate?) or "
                              f"many are corrupt (see replay/corrupt_episodes)")
        out = chunks.out
        is_first = np.zeros((batch, length), np.bool_)
        is_first[:, 0] = starts == 0
        out["is_first"] = is_first
        if with_source:
            out["episode_id"] = np.asarray(chunks.ids, dtype=str)
            out["start"] = starts
        return out

    def _settle(self, connection: RespConnection, suspects: list[tuple[int, str]], seqs: np.ndarray,
                epoch: bytes | None) -> np.ndarray:
        """Quarantine the episodes of chunks that were not whole and are still in service; the chunks to redraw."""
        index = self._refresh(connection)  # an eviction leaves the index in the same atomic step as its data
        corrupt: dict[int, str] = {}
        if self._epoch == epoch:
            for b, reason in suspects:
                seq = int(seqs[b])
                if seq >= index.head and index.steps_of(seq) != QUARANTINED:
                    corrupt.setdefault(seq, reason)
        for seq, reason in corrupt.items():
            self._quarantine(seq, reason, epoch, connection)
        with self._lock:
            self._redrawn += sum(int(seqs[b]) not in corrupt for b, _ in suspects)
        return np.asarray([b for b, _ in suspects])

    def _refresh(self, connection: RespConnection) -> ChunkIndex:
        """Bring the shared local index up to date with the server (one small script call)."""
        behind = 0
        reload = False
        for attempt in range(6):
            full = reload or attempt >= 4 or behind >= 2  # reload everything rather than loop
            known = ChunkIndex() if full else self._index
            reply = self._eval(connection, "INDEX", [self._keys[name] for name in ("stats", "lens", "config")],
                               [known.tail])
            if reply[0] != 1:
                raise self._state_error(reply[1:])
            _, head, tail, first, raw_steps, epoch, corrupt = reply
            try:
                steps = lengths(raw_steps)
            except BadEntry as bad:
                raise self._state_error([self._keys["lens"], f"entry {first - head + bad.position} is not an "
                                                             f"episode length"]) from None
            with self._lock:
                if epoch != self._epoch:  # first contact, or the namespace was wiped (and maybe refilled)
                    if self._epoch is not None:
                        self._spec = None
                    self._epoch, self._index, self._corrupt = epoch, ChunkIndex(), None
                    if known.tail != 0:
                        continue  # the reply was relative to data that is gone
                if corrupt != self._corrupt and known.tail != 0:
                    reload = True  # an episode was quarantined, maybe in the middle of the index: reload it all
                    continue
                base = known if full else self._index
                if not full and (head < base.head or tail < base.tail):
                    behind += 1  # another thread applied a newer state, or the server lost data: ask again
                    continue
                if first == max(base.tail + 1, head):  # else another thread moved the index: ask again
                    try:
                        self._index = base.updated(head, tail, first, steps)
                    except ValueError as error:
                        raise ReplayError(bounded(
                            f"replay of run {self.run!r}: {error}; the index in {self._keys['stats']} and "
                            f"{self._keys['lens']} is damaged")) from None
                    self._corrupt = corrupt
                    return self._index
        raise AssertionError("unreachable: a reload from an empty index always applies")

    def _load_spec(self, connection: RespConnection) -> ReplaySpec:
        if self._spec is None:
            where = f"{self._keys['config']} field spec"
            try:
                raw = connection.call("HGET", self._keys["config"], "spec")
            except RespError as error:
                raise self._state_error([self._keys["config"], bounded(str(error), 80)]) from None
            if raw is None:
                raise ReplayEmptyError(f"replay of run {self.run!r} has no spec yet, so it holds no episode; the run "
                                       f"driver sets it (SequenceReplay(..., spec=...)); wait for the driver and "
                                       f"the actors before sampling")
            self._spec = ReplaySpec.from_json(raw, where)
        return self._spec

    # ------------------------------------------------------------ corruption

    def _quarantine(self, seq: int, reason: str, epoch: bytes | None, connection: RespConnection | None = None) -> bool:
        """Take episode ``seq`` out of service (QUARANTINE script); True if this call did it."""
        keys = [self._keys[name] for name in ("config", "stats", "ids", "lens", "quarantine")]
        args = [self.prefix, seq, epoch or b"", reason, repr(time.time())]
        if connection is not None:
            reply = self._eval(connection, "QUARANTINE", keys, args)
        else:
            reply = self._redis("quarantining an episode", lambda: self._quarantine_script(keys=keys, args=args))
        if reply[0] == -3:
            raise self._state_error(reply[1:])
        if reply[0] == 1:
            _log.warning("replay of run %r: episode %s (e:%d) is corrupt (%s); quarantined (replay/corrupt_episodes)",
                         self.run, bounded(as_text(reply[1]) or "?", 140), seq, reason)
        return reply[0] == 1

    def quarantined(self) -> list[QuarantineRecord]:
        """The corrupt episodes taken out of service so far, oldest first; for tools and tests."""
        raw = self._redis("reading the quarantine", lambda: self._client.hgetall(self._keys["quarantine"]))
        try:
            return quarantine_records(raw)
        except ValueError:
            raise self._state_error([self._keys["quarantine"], "holds a record that is not JSON {id, seq, reason, "
                                                               "time}"]) from None

    # ------------------------------------------------------------ reading episodes back

    def get_episode(self, episode_id: str) -> Episode | None:
        """The whole stored episode ``episode_id``, checksums verified; for tools and tests.

        None if it was never stored, was evicted, or is corrupt (then it is quarantined).
        """
        keys = [self._keys[name] for name in ("stats", "ids", "lens", "config")]
        reply = self._redis("reading an episode",
                            lambda: self._episode_script(keys=keys, args=[self.prefix, episode_id]))
        if reply[0] == 0:
            return None
        if reply[0] == -3:
            raise self._state_error(reply[1:])
        _, seq, steps, *pieces, meta, epoch = reply
        if steps == QUARANTINED:
            return None
        spec = self.spec or self._stored_spec()
        episode, problem = rebuild_episode(spec, episode_id, steps, pieces, meta)
        if problem is not None:
            self._quarantine(seq, problem, epoch)
            return None
        return episode

    def episode_ids(self) -> list[str]:
        """Ids of the stored episodes, oldest first."""
        pairs = self._redis("listing episodes", lambda: self._client.hgetall(self._keys["ids"]))
        try:
            ordered = sorted(pairs.items(), key=lambda item: strict_int(item[1]))
        except ValueError:
            raise self._state_error([self._keys["ids"], "maps an episode to something that is not a sequence "
                                                        "number"]) from None
        return [key.decode(errors="replace") for key, _ in ordered]

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
        raw = self._redis("reading stats", lambda: self._client.hmget(self._keys["stats"], list(_COUNTERS)))
        return {name: self._stat(name, value) for name, value in zip(_COUNTERS, raw)}

    def counts(self) -> tuple[int, int]:
        """(inserted steps, sampled steps) so far: the samples-per-insert limiter's two counters."""
        inserted, sampled = self._redis("reading counts", lambda: self._client.hmget(
            self._keys["stats"], ["inserted_steps", "sampled_steps"]))
        return self._stat("inserted_steps", inserted), self._stat("sampled_steps", sampled)

    def _stat(self, name: str, value: bytes | None) -> int:
        try:
            return strict_int(value) if value is not None else 0
        except ValueError:
            raise self._state_error([self._keys["stats"], f"field {name} is not an integer"]) from None

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

    def _set_up(self, capacity_steps: int | None, spec: ReplaySpec | None) -> tuple[int | None, ReplaySpec | None]:
        config = self._keys["config"]

        def set_up():
            pipe = self._client.pipeline(transaction=True)
            pipe.hsetnx(config, "format", scripts.FORMAT)
            pipe.hsetnx(config, "epoch", secrets.token_hex(8))
            if capacity_steps is not None:
                pipe.hsetnx(config, "capacity", capacity_steps)
            if spec is not None:
                pipe.hsetnx(config, "spec", spec.to_json())
            pipe.hmget(config, ["format", "capacity", "spec"])
            return pipe.execute()[-1]

        stored_format, stored_capacity, stored_spec = self._redis("setting up the replay", set_up)
        if stored_format != scripts.FORMAT.encode():
            raise ReplayError(bounded(f"replay of run {self.run!r} at {self._address.where} has layout "
                                      f"{bounded(as_text(stored_format), 40)!r}, this code reads {scripts.FORMAT!r}; "
                                      f"use a new run name"))
        try:
            stored = strict_int(stored_capacity) if stored_capacity is not None else None
        except ValueError:
            raise self._state_error([config, "field capacity is not an integer"]) from None
        if capacity_steps is not None and stored != capacity_steps:
            raise ReplayError(f"replay of run {self.run!r} was created with capacity_steps={stored}, this process "
                              f"asks for {capacity_steps}; use the run's value (replay.capacity_steps in its "
                              f"config.yaml) or a new run name")
        run_spec = None if stored_spec is None else ReplaySpec.from_json(stored_spec, f"{config} field spec")
        if spec is not None and run_spec != spec:
            raise ReplayError(bounded(f"replay of run {self.run!r} was created with spec {run_spec.describe()}, this "
                                      f"process asks for {spec.describe()}; pass the run's spec (from its config's "
                                      f"env) or use a new run name"))
        return stored, run_spec

    def _stored_spec(self) -> ReplaySpec:
        raw = self._redis("reading the spec", lambda: self._client.hget(self._keys["config"], "spec"))
        if raw is None:
            raise ReplayError(f"replay of run {self.run!r} has no spec set; the run driver sets it with "
                              f"SequenceReplay(url, run, capacity_steps=..., spec=...)")
        self.spec = ReplaySpec.from_json(raw, f"{self._keys['config']} field spec")
        return self.spec

    def _eval(self, connection: RespConnection, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` of replay/scripts.py through the sampler's connection (EVAL when not cached)."""
        for command, script in (("EVALSHA", _SHAS[name]), ("EVAL", getattr(scripts, name))):
            try:
                return connection.call(command, script, len(keys), *keys, *args)
            except RespError as error:
                if command == "EVALSHA" and str(error).startswith("NOSCRIPT"):
                    continue  # a restarted server has no scripts cached
                raise ReplayError(bounded(f"replay {name} script failed on {self._address.where}: "
                                          f"{bounded(str(error), 120)}; check the server's log")) from None
        raise AssertionError("unreachable: EVAL answers or raises")

    def _redis(self, what: str, call: Callable[[], Any], hint: str = "retry when Redis is back") -> Any:
        """``call()`` through redis-py, its failures as replay errors (retryable ones as ReplayConnectionError)."""
        try:
            return call()
        except redis.AuthenticationError as error:
            raise auth_error(self._address, error) from None
        except redis.BusyLoadingError as error:
            raise ReplayConnectionError(not_ready_message(self._address.where, error)) from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise ReplayConnectionError(bounded(f"{what} on {self._address.where} failed: "
                                                f"{bounded(str(error), 100)}; {hint}")) from None
        except redis.ResponseError as error:
            if str(error).startswith(NOT_READY):
                raise ReplayConnectionError(not_ready_message(self._address.where, error)) from None
            raise ReplayError(bounded(f"replay of run {self.run!r}: {what} failed on {self._address.where}: "
                                      f"{bounded(str(error), 100)}; check the keys {self.prefix}* and the "
                                      f"server's log")) from None

    def _state_error(self, detail: Sequence[Any]) -> ReplayError:
        key, problem = (as_text(part) for part in detail[:2])
        return ReplayError(bounded(f"replay of run {self.run!r} cannot use its stored state: {bounded(key, 150)} "
                                   f"{bounded(problem, 120)}; nothing was changed. Repair that key (redis-cli) or "
                                   f"start a new run"))

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


def _aligned(episode: Episode) -> list[np.ndarray]:
    """The four arrays as stored, each (T+1, row bytes) uint8: frames as they are; actions, rewards,
    terminals shifted to frame rows."""
    actions = episode.actions.astype(episode.actions.dtype.newbyteorder("<"), copy=False)
    rows = [
        episode.observations,
        np.concatenate([np.zeros_like(actions[:1]), actions]),  # row t: a_{t-1}
        np.concatenate([np.zeros(1, "<f4"), episode.rewards.astype("<f4", copy=False)]),  # row t: r_{t-1}
        np.concatenate([np.zeros(1, np.bool_), episode.terminals]),  # row t: o_t is terminal
    ]
    return [np.ascontiguousarray(array).reshape(len(array), -1).view(np.uint8) for array in rows]
