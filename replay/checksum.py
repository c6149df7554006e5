"""Per-row checksums of stored episodes, so that a corrupt chunk is never returned as data.

Row t of a stored episode is frame o_t and the rows of actions, rewards and terminals aligned
with it (replay/scripts.py). Its checksum, stored as T+1 little-endian uint64 in ``e:<seq>:c``::

    c_t = xxh3_64(o_t)  XOR  mix64(a_t || r_t || d_t)

Per row, because a chunk is any row range [k, k+L) of an episode: one more GETRANGE fetches the
chunk's checksums. Frames are hashed one xxh3 call each (xxh3 runs near memory speed; the sampler
hashes a chunk's frames as soon as they have arrived, while the server is still sending the next
chunks). The small rows (a few dozen bytes) would cost more in Python calls than in hashing, so
``mix64`` hashes all rows of a batch at once in NumPy: each row's bytes, zero-padded to 8-byte
words, are folded with xxh64-style multiply-rotate rounds and finished with murmur3's fmix64.
This detects accidental damage (truncation, lost or garbled writes, bit rot), not tampering.
"""

from __future__ import annotations

import numpy as np
import xxhash

_hash = xxhash.xxh3_64_intdigest
_SEED = np.uint64(0x27D4EB2F165667C5)
_P1, _P2 = np.uint64(0x9E3779B185EBCA87), np.uint64(0xC2B2AE3D27D4EB4F)
_F1, _F2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_R31, _R33 = np.uint64(31), np.uint64(33)


def frame_hashes(frames: memoryview, frame_bytes: int) -> list[int]:
    """xxh3_64 of each frame in ``frames`` (consecutive rows of ``frame_bytes`` bytes, a 1-D byte view)."""
    return [_hash(frames[i:i + frame_bytes]) for i in range(0, frames.nbytes, frame_bytes)]


def mix64(actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    """(N,) uint64 hash of each row a_t || r_t || d_t, given each as (N, bytes) uint8."""
    rows = len(actions)
    widths = (actions.shape[1], rewards.shape[1], terminals.shape[1])
    size = sum(widths)
    words = -(-size // 8)
    padded = np.zeros((rows, 8 * words), np.uint8)  # (N, 8W): a | r | d | zero padding
    padded[:, :widths[0]] = actions
    padded[:, widths[0]:widths[0] + widths[1]] = rewards
    padded[:, widths[0] + widths[1]:size] = terminals
    lanes = padded.view("<u8")  # (N, W)
    h = np.full(rows, _SEED ^ np.uint64(size), np.uint64)
    for j in range(words):
        h ^= lanes[:, j] * _P2
        h = ((h << _R31) | (h >> _R33)) * _P1
    h ^= h >> _R33
    h *= _F1
    h ^= h >> _R33
    h *= _F2
    h ^= h >> _R33
    return h


def row_checksums(frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    """(N,) '<u8' checksums c_t of N stored rows, each array given as (N, bytes) uint8 (frames C-contiguous)."""
    frame_bytes = frames.shape[1]
    flat = memoryview(np.ascontiguousarray(frames).reshape(-1))
    sums = np.array(frame_hashes(flat, frame_bytes), np.uint64)
    return (sums ^ mix64(actions, rewards, terminals)).astype("<u8")
