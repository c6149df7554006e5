"""Row checksums: the sampler's batched verification against the per-row definition; short error messages."""

from __future__ import annotations

import numpy as np
import pytest

from replay.checksum import mix64, row_checksums
from replay.chunks import PER_CHUNK, ChunkBatch
from replay.errors import MESSAGE_LIMIT, bounded
from replay.spec import ReplaySpec

SPEC = ReplaySpec("t", (4, 5, 3), "<f4", (3,))
DISCRETE = ReplaySpec("t", (4, 5, 3), "<i8", ())


def stored_rows(spec: ReplaySpec, rows: int, seed: int = 0) -> list[np.ndarray]:
    """Random stored rows of o, a, r, d, each (rows, bytes) uint8."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (rows, width), dtype=np.uint8)
            for width in (spec.frame_bytes, spec.action_bytes, 4, 1)]


@pytest.mark.parametrize("spec", [SPEC, DISCRETE])
def test_batched_row_hash_equals_one_row_at_a_time(spec):
    _, a, r, d = stored_rows(spec, 37)
    batched = mix64(a, r, d)
    one_by_one = [int(mix64(a[i:i + 1], r[i:i + 1], d[i:i + 1])[0]) for i in range(37)]
    assert batched.tolist() == one_by_one
    assert len(set(one_by_one)) == 37


@pytest.mark.parametrize("spec", [SPEC, DISCRETE])
def test_any_changed_byte_changes_its_rows_checksum_and_no_other(spec):
    rows = stored_rows(spec, 6, seed=1)
    reference = row_checksums(*rows)
    for part in range(4):
        width = rows[part].shape[1]
        for t, position in ((0, 0), (3, width - 1), (5, width // 2)):
            changed = [array.copy() for array in rows]
            changed[part][t, position] ^= 0x01
            after = row_checksums(*changed)
            assert after[t] != reference[t], (part, t, position)
            assert np.array_equal(np.delete(after, t), np.delete(reference, t))


def whole_replies(count: int, steps: int) -> list:
    """What a pipeline returns for ``count`` chunks whose pieces all landed in place."""
    return [True, True, True, True, str(steps).encode(), True] * count


@pytest.mark.parametrize("spec", [SPEC, DISCRETE])
def test_chunk_batch_verifies_exactly_what_row_checksums_define(spec):
    """The fast path (hash frames in the reply loop, small rows for the whole batch) vs row_checksums per chunk."""
    batch, length, steps = 5, 4, 9
    episode = stored_rows(spec, steps + 1, seed=2)
    checksums = row_checksums(*episode)
    chunks = ChunkBatch(spec, batch, length)
    work = [(b, 1, start) for b, start in enumerate([0, 2, 6, 3, 1])]
    _, sinks, callbacks = chunks.commands("p:", work)
    assert len(sinks) == PER_CHUNK * batch
    stored = {"a": episode[1], "r": episode[2], "d": episode[3], "c": checksums.view(np.uint8).reshape(-1, 8),
              "o": episode[0]}
    for i, (b, _, start) in enumerate(work):  # what GETRANGE would write into each sink, then its callback
        for j, suffix in enumerate("ardc"):
            sinks[PER_CHUNK * i + j][:] = stored[suffix][start:start + length].reshape(-1)
        sinks[PER_CHUNK * i + 5][:] = stored["o"][start:start + length].reshape(-1)
        callbacks[PER_CHUNK * i + 5](True)
    assert chunks.verify(whole_replies(batch, steps), work, np.full(batch, steps), "here") == []

    chunks.out["rewards"][3:4, 2:3].view(np.uint8)[0, 1] ^= 0x10  # a changed reward byte in chunk 3
    chunks.out["observations"][1, 0, 2, 2, 1] ^= 0xFF  # a changed pixel in chunk 1, then its frames hashed again
    callbacks[PER_CHUNK * 1 + 5](True)
    suspects = chunks.verify(whole_replies(batch, steps), work, np.full(batch, steps), "here")
    assert sorted(suspects) == [(1, "checksum mismatch"), (3, "checksum mismatch")]


def test_chunk_batch_names_missing_truncated_and_inconsistent_pieces():
    chunks = ChunkBatch(SPEC, 6, 2, with_source=True)
    work = [(b, b + 1, 0) for b in range(6)]
    ok_meta = [b"9", b"run.ep00001"]
    replies = ([True, True, True, True, ok_meta, b""]  # o missing
               + [True, b"\x00" * 3, True, True, ok_meta, True]  # r shorter than asked
               + [True, True, True, True, [None, None], True]  # metadata missing
               + [True, True, True, True, [b"8", b"run.ep00004"], True]  # steps differ from the index
               + [True, True, True, True, [b"9", b"bad id!"], True]  # malformed id
               + [True, True, True, True, [b"9x", b"run.ep00006"], True])  # steps not an integer
    got = dict(chunks.verify(replies, work, np.full(6, 9), "here"))
    assert got == {0: "o missing", 1: "r truncated", 2: "metadata missing", 3: "metadata steps differ from the index",
                   4: "metadata id missing or malformed", 5: "metadata steps differ from the index"}


def test_bounded_keeps_both_ends():
    assert bounded("short") == "short"
    text = "problem: " + "x" * 10_000 + "; the fix"
    cut = bounded(text)
    assert len(cut) <= MESSAGE_LIMIT and cut.startswith("problem: ") and cut.endswith("; the fix") and " ... " in cut
    assert len(bounded(text, 40)) <= 40
