"""PlaNet's observation preprocessing, the area resize and the PNG writer."""

import struct
import zlib

import numpy as np
import pytest
import torch

from common.envs import resize_area
from common.envs.preprocess import postprocess_observation, preprocess_observation
from common.images import encode_png, frame_grid

ALL_BYTES = torch.arange(256, dtype=torch.uint8)


@pytest.mark.parametrize("bit_depth", [5, 8, 1])
def test_preprocess_keeps_bit_depth_and_noise_stays_in_bin(bit_depth):
    x = preprocess_observation(ALL_BYTES.repeat(50), bit_depth, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    assert x.min() >= -0.5 and x.max() < 0.5
    floors = (ALL_BYTES.repeat(50) >> (8 - bit_depth)) << (8 - bit_depth)
    assert torch.equal(postprocess_observation(x, bit_depth), floors)
    clean = preprocess_observation(ALL_BYTES, bit_depth, noise=False)
    assert len(torch.unique(clean)) == 2 ** bit_depth
    assert (x.view(50, 256) - clean).min() >= 0 and (x.view(50, 256) - clean).max() < 1 / 2 ** bit_depth


def test_preprocess_noise_is_uniform_within_bins():
    x = preprocess_observation(torch.zeros(100_000, dtype=torch.uint8), 5, generator=torch.Generator().manual_seed(1))
    assert float((x + 0.5).mean()) == pytest.approx(1 / 64, rel=0.02)


def test_preprocess_rejects_float_frames():
    with pytest.raises(TypeError, match="uint8"):
        preprocess_observation(torch.zeros(3), 5)


def test_resize_area_preserves_constants_and_means():
    flat = np.full((210, 160, 3), 77, np.uint8)
    assert np.all(resize_area(flat, (64, 64)) == 77)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    small = resize_area(frame, (64, 64))
    expected = frame.reshape(64, 2, 64, 2, 3).astype(np.float32).mean(axis=(1, 3))
    assert np.abs(small.astype(np.float32) - expected).max() <= 0.5


def _read_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, raw, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            raw += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(raw)


def test_png_pixels_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    width, height, raw = _read_png(encode_png(image))
    assert (width, height) == (7, 5)
    rows = np.frombuffer(raw, np.uint8).reshape(5, 1 + 7 * 3)
    assert np.all(rows[:, 0] == 0) and np.array_equal(rows[:, 1:].reshape(5, 7, 3), image)


def test_frame_grid_layout():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(20)])
    grid = frame_grid(frames, count=10, columns=5, gap=1)
    assert grid.shape == (2 * 5 - 1, 5 * 5 - 1, 3)
    assert grid[0, 0, 0] == 0 and grid[-1, -1, 0] == 19


def test_comparison_grid_rows_line_up():
    from common.images import comparison_grid

    truth = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(6)])
    grid = comparison_grid([truth, truth + 100], count=3, gap=1)
    assert grid.shape == (2 * 5 - 1, 3 * 5 - 1, 3)
    assert grid[0, 0, 0] == 0 and grid[5, 0, 0] == 100 and grid[5, -1, 0] == 105
    with pytest.raises(ValueError, match="one shape"):
        comparison_grid([truth, truth[:3]])
