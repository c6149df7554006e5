"""PlaNet's observation preprocessing, the one function learner and actor both use.

uint8 frames are reduced to ``bit_depth`` bits per channel, scaled to [-0.5, 0.5),
and dequantised with uniform noise inside each bin (Hafner et al. 2019, 5 bits).
Layout is left as given: callers permute (..., H, W, C) to (..., C, H, W) themselves.
"""

from __future__ import annotations

import torch


def preprocess_observation(frames: torch.Tensor, bit_depth: int = 5, *, noise: bool = True,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [0, 255] -> float32 in [-0.5, 0.5): 2**bit_depth bins, each filled by uniform noise when ``noise``."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"preprocess_observation takes uint8 frames, got {frames.dtype}")
    bins = 2 ** bit_depth
    x = torch.floor(frames.float() / 2 ** (8 - bit_depth)) / bins - 0.5
    if noise:
        x = x + torch.rand(x.shape, generator=generator, device=x.device) / bins
    return x


def postprocess_observation(x: torch.Tensor, bit_depth: int = 5) -> torch.Tensor:
    """Inverse of :func:`preprocess_observation` up to the dequantisation noise: float -> uint8 bin floors."""
    bins = 2 ** bit_depth
    levels = torch.clamp(torch.floor((x + 0.5) * bins), 0, bins - 1)
    return (levels * 2 ** (8 - bit_depth)).to(torch.uint8)
