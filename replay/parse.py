"""What comes back from Redis, checked before use: integers, index lengths, quarantine records, whole episodes.

Nothing read from Redis is trusted (nor unpickled): a value that is not what the layout says
(replay/scripts.py) raises ValueError here, or comes back as a short reason, and the caller turns
it into a bounded ReplayError naming the key, or into a quarantine.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import numpy as np

from common.episode import Episode, EpisodeError, EpisodeInfo
from replay.checksum import row_checksums
from replay.index import QUARANTINED
from replay.spec import ACTION_DTYPES, ReplaySpec

_INT = re.compile(rb"-?[0-9]{1,15}")


@dataclasses.dataclass(frozen=True)
class QuarantineRecord:
    """One corrupt episode taken out of service (``P quarantine``)."""

    seq: int
    """Its sequence number (the key ``e:<seq>:*`` its data had)."""
    episode_id: str
    """Its id ('' when no id mapped to it any more)."""
    reason: str
    """What was wrong, e.g. 'checksum mismatch', 'o truncated', 'metadata missing'."""
    time: float
    """Unix time it was quarantined."""


def rebuild_episode(spec: ReplaySpec, episode_id: str, steps: Any, pieces: list[Any], meta: list[Any]
                    ) -> tuple[Episode | None, str | None]:
    """The episode from its stored pieces (o, a, r, d, c) and metadata (id, steps, header), or why it is corrupt."""
    if not isinstance(steps, int) or steps < 1:
        return None, "index length"
    rows = steps + 1
    sizes = (spec.frame_bytes, spec.action_bytes, 4, 1, 8)
    for suffix, piece, size in zip("oardc", pieces, sizes):
        if not piece:
            return None, f"{suffix} missing"
        if len(piece) != rows * size:
            return None, f"{suffix} truncated" if len(piece) < rows * size else f"{suffix} too long"
    arrays = [np.frombuffer(piece, np.uint8).reshape(rows, size) for piece, size in zip(pieces[:4], sizes)]
    if not np.array_equal(row_checksums(*arrays), np.frombuffer(pieces[4], "<u8")):
        return None, "checksum mismatch"
    meta_id, meta_steps, header = meta
    if meta_id != episode_id.encode() or meta_steps is None or not _INT.fullmatch(meta_steps) \
            or int(meta_steps) != steps:
        return None, "metadata differs from the index"
    try:
        info = EpisodeInfo.from_json(json.loads(header)["info"])
        if info.episode_id != episode_id or info.task != spec.task:
            raise EpisodeError("header names another episode")
        action_dtype = ACTION_DTYPES[spec.action_dtype]
        episode = Episode(  # actions, rewards, terminals without the alignment row; copies (own memory)
            observations=np.frombuffer(pieces[0], np.uint8).reshape(rows, *spec.frame).copy(),
            actions=np.frombuffer(pieces[1], action_dtype).reshape(rows, *spec.action_shape)[1:]
            .astype(action_dtype.newbyteorder("=")),
            rewards=np.frombuffer(pieces[2], "<f4")[1:].astype(np.float32),
            terminals=np.frombuffer(pieces[3], np.bool_)[1:].copy(), info=info)
    except (ValueError, KeyError, TypeError, RecursionError, EpisodeError):  # (json's errors are ValueErrors)
        return None, "metadata header"
    return episode, None


class BadEntry(ValueError):
    """An index entry that is not an episode length, at ``position`` of the entries read."""

    def __init__(self, position: int):
        super().__init__(position)
        self.position = position


def lengths(raw: list[Any]) -> list[int]:
    """Validated episode lengths from the index (T >= 1, or QUARANTINED); BadEntry at the first other."""
    steps = []
    for position, value in enumerate(raw):
        try:
            steps.append(strict_int(value))
        except ValueError:
            raise BadEntry(position) from None
        if steps[-1] < 1 and steps[-1] != QUARANTINED:
            raise BadEntry(position)
    return steps


def strict_int(value: Any) -> int:
    """An integer stored as decimal ASCII; ValueError for anything else (int() would take ' 1_0')."""
    if isinstance(value, int):
        return value
    if not isinstance(value, bytes) or not _INT.fullmatch(value):
        raise ValueError("not an integer")
    return int(value)


def as_text(value: Any) -> str:
    """A reply (bytes or not) as text for messages; bound it before use."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def quarantine_records(raw: dict[bytes, bytes]) -> list[QuarantineRecord]:
    """The records of the quarantine hash (seq -> JSON {id, seq, reason, time}), oldest first; ValueError if bad."""
    records = []
    for field, value in raw.items():
        try:
            record = json.loads(value)
            records.append(QuarantineRecord(strict_int(field), str(record["id"]), str(record["reason"])[:200],
                                            float(record["time"])))
        except (KeyError, TypeError) as error:
            raise ValueError(type(error).__name__) from None
    return sorted(records, key=lambda record: record.seq)
