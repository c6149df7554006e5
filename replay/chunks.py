"""One sampled batch: its arrays, the commands that fill them in place, and the checks that each chunk is whole.

A chunk [k, k+L) of episode ``seq`` is six commands, in this order::

    GETRANGE e:<seq>:a  GETRANGE e:<seq>:r  GETRANGE e:<seq>:d  GETRANGE e:<seq>:c   rows k .. k+L-1
    HGET e:<seq>:m steps   (HMGET e:<seq>:m steps id with_source)                    metadata
    GETRANGE e:<seq>:o                                                              frames k .. k+L-1

Each GETRANGE reply lands straight in its place in the batch arrays (replay/wire.py). The
frames come last so that their checksums can be computed as soon as they have arrived (a
callback of the reply loop), while the server is still sending the next chunks; the small rows
of the whole batch are hashed at once afterwards (replay/checksum.py). A chunk is whole when
every piece came back at its full size, the metadata agrees with the index and every row's
checksum matches; anything else is reported with a short reason, never with the bytes. The
sampler sends the commands one chunk at a time, two chunks ahead of the one it reads
(``RespConnection.pipeline(window=PER_CHUNK)``), so the server keeps sending while it verifies.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from replay.checksum import frame_hashes, mix64
from replay.errors import ReplayError, bounded
from replay.spec import ACTION_DTYPES, ReplaySpec
from replay.wire import RespError

PER_CHUNK = 6
_SMALL = ("a", "r", "d", "c")
_ID = re.compile(rb"[A-Za-z0-9_.:-]{1,128}")
_STEPS = re.compile(rb"[0-9]{1,15}")


class ChunkBatch:
    """The (B, L) batch arrays of a spec, plus checksum buffers; filled chunk by chunk over fetch rounds."""

    def __init__(self, spec: ReplaySpec, batch: int, length: int, with_source: bool = False):
        """``with_source``: also fetch each chunk's episode id (``ids``)."""
        self.spec, self.batch, self.length, self.with_source = spec, batch, length, with_source
        self.out = {
            "observations": np.empty((batch, length, *spec.frame), np.uint8),
            "actions": np.empty((batch, length, *spec.action_shape), ACTION_DTYPES[spec.action_dtype]),
            "rewards": np.empty((batch, length), np.dtype("<f4")),
            "terminals": np.empty((batch, length), np.bool_),
        }
        self.checks = np.empty((batch, length), np.dtype("<u8"))  # stored c_t of each row
        self.frame_sums = np.empty((batch, length), np.uint64)  # xxh3_64(o_t) of each fetched frame
        self.ids: list[str | None] = [None] * batch
        out = self.out
        # (B, L * row bytes) byte views of the arrays, in command order, with their row sizes
        self._rows = {"a": (out["actions"].reshape(batch, -1).view(np.uint8), spec.action_bytes),
                      "r": (out["rewards"].view(np.uint8), 4),
                      "d": (out["terminals"].view(np.uint8), 1),
                      "c": (self.checks.view(np.uint8), 8),
                      "o": (out["observations"].reshape(batch, -1), spec.frame_bytes)}

    def commands(self, prefix: str, chunks: list[tuple[int, int, int]]
                 ) -> tuple[list[tuple], list[memoryview | None], list[Callable[[Any], None] | None]]:
        """Commands, sinks and callbacks that fetch ``chunks`` = [(b, seq, start k), ...] into place."""
        commands: list[tuple] = []
        sinks: list[memoryview | None] = []
        callbacks: list[Callable[[Any], None] | None] = []
        length = self.length
        small = [(suffix, *self._rows[suffix]) for suffix in _SMALL]
        frames, frame_row = self._rows["o"]
        metadata = ("steps", "id") if self.with_source else ("steps",)
        read_metadata = "HMGET" if self.with_source else "HGET"
        for b, seq, start in chunks:
            key = f"{prefix}e:{seq}:"
            for suffix, flat, row in small:
                commands.append(("GETRANGE", key + suffix, start * row, (start + length) * row - 1))
                sinks.append(memoryview(flat[b]))
            commands.append((read_metadata, key + "m", *metadata))
            commands.append(("GETRANGE", key + "o", start * frame_row, (start + length) * frame_row - 1))
            sinks += [None, memoryview(frames[b])]
            callbacks += [None, None, None, None, None, self._hasher(b)]
        return commands, sinks, callbacks

    def verify(self, replies: list[Any], chunks: list[tuple[int, int, int]], steps: np.ndarray,
               where: str) -> list[tuple[int, str]]:
        """(b, reason) of every chunk that is not whole; ``steps``: T of each chunk's episode per the index.

        Sets ``ids[b]`` of the whole ones. Raises ReplayError for an error reply that is not about
        the data (``where`` names the server in it).
        """
        suspects: list[tuple[int, str]] = []
        whole: list[int] = []
        for i, (b, _, _) in enumerate(chunks):
            a, r, d, c, meta, o = replies[i * PER_CHUNK:(i + 1) * PER_CHUNK]
            if a is True and r is True and d is True and c is True and o is True:
                reason = self._metadata_problem(b, meta, int(steps[i]), where)
            else:
                reason = next(_piece_problem(suffix, reply, where)
                              for suffix, reply in zip("ardco", (a, r, d, c, o)) if reply is not True)
            if reason is None:
                whole.append(b)
            else:
                suspects.append((b, reason))
        if whole:
            rows = np.asarray(whole)
            count, length = len(rows), self.length
            small = mix64(self._rows["a"][0][rows].reshape(count * length, -1),
                          self._rows["r"][0][rows].reshape(count * length, 4),
                          self._rows["d"][0][rows].reshape(count * length, 1)).reshape(count, length)
            bad = ((self.frame_sums[rows] ^ small) != self.checks[rows]).any(axis=1)
            suspects += [(int(b), "checksum mismatch") for b in rows[bad]]
        return suspects

    def _hasher(self, b: int) -> Callable[[Any], None]:
        frames, sums, frame_bytes = memoryview(self._rows["o"][0][b]), self.frame_sums, self.spec.frame_bytes

        def hash_frames(reply: Any) -> None:
            if reply is True:  # the frames are in place: hash them while the next replies arrive
                sums[b] = frame_hashes(frames, frame_bytes)
        return hash_frames

    def _metadata_problem(self, b: int, reply: Any, steps: int, where: str) -> str | None:
        if isinstance(reply, RespError):
            return _error_problem("m", reply, where)
        raw_steps, raw_id = reply if self.with_source and isinstance(reply, list) and len(reply) == 2 else (reply, b"")
        if raw_steps is None:
            return "metadata missing"
        if type(raw_steps) is not bytes or not _STEPS.fullmatch(raw_steps) or int(raw_steps) != steps:
            return "metadata steps differ from the index"
        if self.with_source:
            if type(raw_id) is not bytes or not _ID.fullmatch(raw_id):
                return "metadata id missing or malformed"
            self.ids[b] = raw_id.decode()
        return None


def _piece_problem(suffix: str, reply: Any, where: str) -> str:
    if isinstance(reply, RespError):
        return _error_problem(suffix, reply, where)
    if not isinstance(reply, bytes) or not reply:
        return f"{suffix} missing"
    return f"{suffix} truncated"


def _error_problem(suffix: str, reply: RespError, where: str) -> str:
    if str(reply).startswith("WRONGTYPE"):
        return f"{suffix} has the wrong type"
    raise ReplayError(bounded(f"sample: Redis at {where} answered {bounded(str(reply), 100)} to a read of "
                              f"e:<seq>:{suffix}; check the server's log and ACL"))
