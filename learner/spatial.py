"""Convolutional parts of Buesing et al.'s models: states that are feature maps, not vectors.

Dimension letters as in DESIGN.md, plus S = 8, the side of every state map (64x64 frames are
reduced 8x), and C for channels. A map of C channels travels through the shared :class:`State`
flattened channel-major, (N, C * S * S), so that planners, actors and losses handle it like any
vector state; the modules here reshape it back to (N, C, S, S).

- :class:`PoolAndInject`: max-pool a map over its whole extent, tile the result back and concatenate
  it to the map, so one layer carries information across the whole frame.
- :func:`trunk`: conv, pool-and-inject, conv: the global-context stack of every spatial transition;
  :func:`transition_net` is a trunk with an output conv, :func:`head` two convs.
- :class:`SpatialEncoder`: 64x64 frames -> an (E_c, S, S) map; :class:`SpatialDecoder`: a map ->
  64x64 frames by depth-to-space upsampling; :class:`SpatialRewardHead`: a map -> scalar reward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

S = 8
"""Side of the state maps: a 64x64 frame is seen as an 8x8 grid of 8x8-pixel cells."""


class PoolAndInject(nn.Module):
    """(N, C, S, S) -> (N, 2C, S, S): the map, then its global max per channel broadcast to every position.

    A plain 3x3 conv moves information one cell per layer; after this layer every position sees the
    maximum over all positions, so a change in one corner can reach the opposite one at once.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.amax(dim=(-2, -1), keepdim=True)  # (N, C, S, S) -> (N, C, 1, 1)
        return torch.cat([x, pooled.expand_as(x)], 1)


def trunk(inputs: int, hidden: int) -> nn.Sequential:
    """Conv 3x3 -> ReLU -> pool-and-inject -> conv 3x3 -> ReLU: (N, inputs, S, S) -> (N, hidden, S, S)."""
    return nn.Sequential(
        nn.Conv2d(inputs, hidden, 3, padding=1), nn.ReLU(),
        PoolAndInject(),
        nn.Conv2d(2 * hidden, hidden, 3, padding=1), nn.ReLU(),
    )


def transition_net(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """A :func:`trunk`, then a 3x3 conv to ``outputs`` channels: (N, inputs, S, S) -> (N, outputs, S, S)."""
    return nn.Sequential(*trunk(inputs, hidden), nn.Conv2d(hidden, outputs, 3, padding=1))


def head(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Conv 3x3 -> ReLU -> conv 3x3: (N, inputs, S, S) -> (N, outputs, S, S)."""
    return nn.Sequential(nn.Conv2d(inputs, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, outputs, 3, padding=1))


def tile(action: torch.Tensor) -> torch.Tensor:
    """(N, A) -> (N, A, S, S): the action vector at every position of the map, as Buesing et al. feed it."""
    return action[:, :, None, None].expand(*action.shape, S, S)


def as_map(flat: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., C * S * S) -> (N, C, S, S), N the product of the leading dims."""
    return flat.reshape(-1, channels, S, S)


class SpatialEncoder(nn.Module):
    """Three 4x4 stride-2 convs, depth x (1, 2, 4) channels: (..., in, 64, 64) -> (..., E) with E = 4 depth S S.

    64 -> 32 -> 16 -> 8 pixels; the output is the flattened (4 depth, S, S) map, channel-major.
    ``in_channels`` is 3 for one frame, 3k for k frames stacked on the channels.
    """

    def __init__(self, depth: int, in_channels: int = 3):
        super().__init__()
        self.channels = 4 * depth
        self.embed_size = self.channels * S * S
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, depth, 4, 2, padding=1), nn.ReLU(),
            nn.Conv2d(depth, 2 * depth, 4, 2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * depth, self.channels, 4, 2, padding=1), nn.ReLU(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames.shape[:-3]
        x = self.net(frames.reshape(-1, *frames.shape[-3:]))  # (..., in, 64, 64) -> (N, E_c, S, S)
        return x.reshape(*batch, self.embed_size)  # (N, E_c, S, S) -> (..., E)


class SpatialDecoder(nn.Module):
    """(..., C * S * S) map -> (..., 3, 64, 64) image mean: a 3x3 conv, then three depth-to-space stages.

    Each stage is a 3x3 conv to 4x the channels, rearranged by pixel shuffle into a map twice as
    large (Buesing et al.'s depth-to-space upsampling): 8 -> 16 -> 32 -> 64 pixels with
    depth x (4, 2, 1) channels, the last stage ending in 3 colour channels.
    """

    def __init__(self, in_channels: int, depth: int):
        super().__init__()
        self.in_channels = in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 4 * depth, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4 * depth, 4 * 2 * depth, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
            nn.Conv2d(2 * depth, 4 * depth, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
            nn.Conv2d(depth, 4 * 3, 3, padding=1), nn.PixelShuffle(2),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[:-1]
        x = self.net(as_map(features, self.in_channels))  # (..., C S S) -> (N, C, S, S) -> (N, 3, 64, 64)
        return x.reshape(*batch, 3, 64, 64)


class SpatialRewardHead(nn.Module):
    """(..., C * S * S) map -> (..., 1): a 1x1 conv to 8 channels keeps where things are, then an MLP."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.in_channels = in_channels
        self.squeeze = nn.Conv2d(in_channels, 8, 1)
        self.mlp = nn.Sequential(nn.Linear(8 * S * S, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[:-1]
        x = F.relu(self.squeeze(as_map(features, self.in_channels)))  # (N, C, S, S) -> (N, 8, S, S)
        return self.mlp(x.flatten(1)).reshape(*batch, 1)  # (N, 8 S S) -> (..., 1)
