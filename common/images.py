"""Pictures without image libraries: PNG files and frame grids from uint8 frames."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> PNG bytes (8-bit RGB or grey, no filtering)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"encode_png takes (H, W, 3) or (H, W) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)  # filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
    return path


def frame_grid(frames: np.ndarray, count: int = 16, columns: int = 8, gap: int = 2) -> np.ndarray:
    """``count`` evenly spaced frames of a (T, H, W, 3) clip laid out in rows of ``columns``, on white."""
    picks = frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)]
    rows = -(-len(picks) // columns)
    height, width = frames.shape[1:3]
    grid = np.full((rows * (height + gap) - gap, min(columns, len(picks)) * (width + gap) - gap, 3), 255, np.uint8)
    for i, frame in enumerate(picks):
        y, x = divmod(i, columns)
        grid[y * (height + gap):y * (height + gap) + height, x * (width + gap):x * (width + gap) + width] = frame
    return grid


def comparison_grid(rows: list[np.ndarray], count: int = 10, gap: int = 2) -> np.ndarray:
    """Clips of equal length (T, H, W, 3), one per row (e.g. truth, model, error), ``count`` columns picked alike."""
    length = len(rows[0])
    if any(len(r) != length or r.shape[1:] != rows[0].shape[1:] for r in rows):
        raise ValueError(f"comparison_grid needs clips of one shape, got {[r.shape for r in rows]}")
    picks = np.linspace(0, length - 1, min(count, length)).round().astype(int)
    return frame_grid(np.concatenate([r[picks] for r in rows]), count=len(picks) * len(rows),
                      columns=len(picks), gap=gap)
