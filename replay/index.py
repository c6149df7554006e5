"""The sampler's local copy of the episode index, and uniform draws over all valid chunk starts.

Stored episodes carry consecutive sequence numbers ``head .. tail``: each insert takes the
next number and FIFO eviction removes the lowest, so the whole index is two integers plus
one length per episode, kept in Redis as a list aligned with ``head``. A sampler holds a
:class:`ChunkIndex` and refreshes it before every batch by fetching only what changed (the
new ``head`` and the lengths of episodes past its old ``tail``): one small round trip.

An episode of T steps has T+1 frames and T+2-L valid starts for chunks of L frames
(none when T+1 < L). Drawing a chunk uniformly over all starts of all episodes = drawing
an integer below the total number of starts and locating it in the cumulative sums.
A quarantined episode (corrupt data, taken out of service) keeps its place with the length
``QUARANTINED`` = -1, which has no valid start, until FIFO eviction reaches it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from replay.errors import ReplayEmptyError

QUARANTINED = -1
"""The length in the index of an episode taken out of service (no chunk starts in it)."""


class ChunkIndex:
    """Stored episodes ``head .. head+n-1`` and their lengths T (agent steps); immutable."""

    def __init__(self, head: int = 1, steps: np.ndarray | None = None):
        self.head = head
        """Sequence number of the oldest stored episode."""
        self.steps = np.zeros(0, np.int64) if steps is None else np.asarray(steps, np.int64)
        """(N,) T of episodes head .. tail (QUARANTINED for those out of service)."""
        self._cumulative: dict[int, np.ndarray] = {}

    @property
    def tail(self) -> int:
        """Sequence number of the newest stored episode (head - 1 when empty)."""
        return self.head + len(self.steps) - 1

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def live(self) -> int:
        """Episodes in service (not quarantined)."""
        return int((self.steps != QUARANTINED).sum())

    def steps_of(self, seqs: np.ndarray) -> np.ndarray:
        """T of each of the sequence numbers ``seqs`` (all within head .. tail)."""
        return self.steps[np.asarray(seqs) - self.head]

    def updated(self, head: int, tail: int, first: int, new_steps: Sequence[int]) -> ChunkIndex:
        """The index after the server reported ``head``, ``tail`` and the lengths of ``first .. tail``.

        ``first`` must be ``max(self.tail + 1, head)``: what this index asked for.
        """
        if first != max(self.tail + 1, head) or len(new_steps) != max(0, tail - first + 1) or head > tail + 1:
            raise ValueError(f"inconsistent index update: head={head} tail={tail} first={first} "
                             f"{len(new_steps)} lengths for an index of {self.head}..{self.tail}")
        if head == self.head and tail == self.tail:
            return self
        kept = self.steps[max(0, head - self.head):]  # drop the evicted
        steps = np.concatenate([kept, np.asarray(new_steps, np.int64)]) if len(new_steps) else kept
        return ChunkIndex(head, steps)

    def starts(self, length: int) -> np.ndarray:
        """(N,) valid chunk starts per episode: max(0, T + 2 - L)."""
        return np.maximum(self.steps + 2 - length, 0)

    def total_starts(self, length: int) -> int:
        cumulative = self._cumulative_starts(length)
        return int(cumulative[-1]) if len(cumulative) else 0

    def draw(self, count: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` chunks uniform over all valid starts: (sequence numbers, starts k), each (count,).

        A chunk covers frames k .. k+L-1 of its episode. Raises ReplayEmptyError when no
        stored episode has L frames.
        """
        if length < 1:
            raise ValueError(f"chunk length must be >= 1, got {length}")
        cumulative = self._cumulative_starts(length)
        total = int(cumulative[-1]) if len(cumulative) else 0
        if total == 0:
            if not self.live:
                raise ReplayEmptyError("replay holds no episode yet; wait for the actors (the limiter's "
                                       "min_size) before sampling")
            longest = int(self.steps.max()) + 1
            raise ReplayEmptyError(
                f"replay holds no chunk of {length} frames: {self.live} episode(s), the longest with "
                f"{longest} frames; wait for more episodes (the limiter's min_size) or sample shorter chunks")
        draws = rng.integers(0, total, size=count)
        episode = np.searchsorted(cumulative, draws, side="right")  # first cumulative > draw
        before = cumulative[episode] - self.starts(length)[episode]  # starts in earlier episodes
        return self.head + episode, draws - before

    def _cumulative_starts(self, length: int) -> np.ndarray:
        cumulative = self._cumulative.get(length)
        if cumulative is None:  # (a benign race between threads: both compute the same array)
            cumulative = np.cumsum(self.starts(length))
            self._cumulative[length] = cumulative
        return cumulative
