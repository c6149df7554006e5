"""PlaNet's convolutional encoder and decoder, and the MLP heads.

Shapes: frames (N, 3, 64, 64) float in [-0.5, 0.5) -> embedding (N, E) with
E = 32 * depth (1024 for depth 32); features (N, F) -> image mean (N, 3, 64, 64).
"""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """Four 4x4 stride-2 convs, depth x (1, 2, 4, 8) channels: 64 -> 31 -> 14 -> 6 -> 2 pixels."""

    def __init__(self, depth: int = 32):
        super().__init__()
        self.embed_size = 32 * depth
        self.net = nn.Sequential(
            nn.Conv2d(3, depth, 4, 2), nn.ReLU(),
            nn.Conv2d(depth, 2 * depth, 4, 2), nn.ReLU(),
            nn.Conv2d(2 * depth, 4 * depth, 4, 2), nn.ReLU(),
            nn.Conv2d(4 * depth, 8 * depth, 4, 2), nn.ReLU(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames.shape[:-3]
        x = self.net(frames.reshape(-1, *frames.shape[-3:]))  # (..., 3, 64, 64) -> (N, 8d, 2, 2)
        return x.reshape(*batch, self.embed_size)  # (N, 8d, 2, 2) -> (..., E)


class Decoder(nn.Module):
    """Features -> 1x1 map -> transposed convs (5, 5, 6, 6; stride 2): 1 -> 5 -> 13 -> 30 -> 64 pixels."""

    def __init__(self, feature_size: int, depth: int = 32):
        super().__init__()
        self.project = nn.Linear(feature_size, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(2 * depth, depth, 6, 2), nn.ReLU(),
            nn.ConvTranspose2d(depth, 3, 6, 2),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[:-1]
        x = self.project(features).reshape(-1, self.project.out_features)  # (..., F) -> (N, 32d)
        x = self._first_layer(x)  # (N, 32d) -> (N, 4d, 5, 5)
        return self.net[1:](x).reshape(*batch, 3, 64, 64)

    def _first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """``self.net[0]`` applied to a 1x1 map, computed as the matrix product it is.

        A transposed conv on a 1x1 input writes weight[i, :, :, :] * x_i into a k x k patch, so it equals
        x @ weight.reshape(C_in, C_out * k * k) plus the bias per channel; oneDNN runs the product
        several times faster than its deconvolution. Same weights, same result (tested).
        """
        deconv = self.net[0]
        c_in, c_out, k, _ = deconv.weight.shape
        y = torch.nn.functional.linear(x, deconv.weight.reshape(c_in, c_out * k * k).t(),
                                       deconv.bias.repeat_interleave(k * k))
        y = y.reshape(-1, c_out, k, k).contiguous(memory_format=torch.channels_last)  # (N, C*k*k) -> (N, C, k, k)
        return torch.relu(y)


def mlp(inputs: int, hidden: int, outputs: int, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [nn.Linear(inputs if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*modules, nn.Linear(hidden, outputs))


class GRUCell(nn.Module):
    """The GRU of torch.nn.GRUCell written with two Linear layers, so that autocast runs it in bf16 too.

    r = sigmoid(W_ir x + W_hr h), z = sigmoid(W_iz x + W_hz h), n = tanh(W_in x + r * (W_hn h)),
    h' = (1 - z) * n + z * h.
    """

    def __init__(self, inputs: int, size: int):
        super().__init__()
        self.input = nn.Linear(inputs, 3 * size)
        self.hidden = nn.Linear(size, 3 * size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xr, xz, xn = self.input(x).chunk(3, -1)
        hr, hz, hn = self.hidden(h).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h).to(h.dtype)
