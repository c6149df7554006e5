"""The Learner: one world model, Adam, and ``update(batch) -> metrics``. No Ray, no Redis.

A batch is what replay samples, batch-major:

    observations  (B, L, 64, 64, 3) uint8   o_t
    actions       (B, L, A) float32         a_tm1, the action before o_t  (or (B, L) int64 when discrete)
    rewards       (B, L) float32            r_tm1, received with the step into o_t

The Learner transposes to time-major, preprocesses frames (PlaNet's 5-bit depth with
dequantisation noise), and applies the loss of the model's family (learner/objectives.py: PlaNet's
ELBO of learner/losses.py for latent-state families, teacher forcing for ar, chunks packed into
jumps of ``model.jump`` agent steps for a jumpy model).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping

import numpy as np
import torch

from common.config import Config
from common.envs.preprocess import preprocess_observation
from learner.objectives import model_loss
from learner.world_model import WorldModel, one_hot_actions

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bfloat16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose auto or one of {', '.join(PRECISIONS)}")
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if native else "float32"


class Learner:
    def __init__(self, cfg: Config, action_size: int, *, discrete: bool = False, device: str | torch.device = "cpu",
                 seed: int = 0, precision: str | None = None, compile: bool | None = None):
        """``action_size``: A, or the number of actions when ``discrete`` (the model sees them one-hot).

        ``precision`` (default ``cfg.train.precision``): "bfloat16" runs the forward pass under autocast
        (convolutions and matrix products in bf16; losses, weights and optimiser state in float32);
        "auto" picks it where the device has native bf16. ``compile`` (default ``cfg.train.compile``)
        wraps the loss in torch.compile.
        """
        self.cfg, self.discrete, self.action_size = cfg, discrete, action_size
        self.device = torch.device(device)
        self.precision = resolve_precision(precision or cfg.train.precision, self.device)
        torch.manual_seed(seed)
        # Channels-last convolutions run several times faster on CPU (oneDNN) and on GPU tensor cores.
        self.model = WorldModel.from_config(cfg, action_size).to(self.device, memory_format=torch.channels_last)
        compile = cfg.train.compile if compile is None else compile
        self._forward = torch.compile(self._loss) if compile else self._loss
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.learning_rate, eps=cfg.train.adam_eps)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.updates = 0
        self.skipped = 0

    # ------------------------------------------------------------ training

    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step on a (B, L) chunk batch; returns ``learner/*`` metrics.

        A non-finite loss or gradient is never applied: the step is skipped and counted in
        ``learner/skipped_updates``.
        """
        start = time.perf_counter()
        observations, actions, rewards = self._prepare(batch)
        self.model.train()
        with self._autocast():
            total, _, tensors = self._forward(observations, actions, rewards)
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(total))
        if finite:
            total.backward()
            tensors["learner/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                           self.cfg.train.grad_clip)
            finite = bool(torch.isfinite(tensors["learner/grad_norm"]))
        # One device-to-host copy for all metrics.
        metrics = dict(zip(tensors, torch.stack([t.float() for t in tensors.values()]).tolist()))
        if finite:
            self.optimizer.step()
            self.updates += 1
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
        metrics.update({"learner/updates": self.updates, "learner/skipped_updates": self.skipped,
                        "learner/update_applied": float(finite),
                        "learner/ms_per_update": 1000 * (time.perf_counter() - start)})
        return metrics

    def _loss(self, observations, actions, rewards):
        return model_loss(self.model, observations, actions, rewards, self.cfg.loss, self.generator)

    def _prepare(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check shapes, move to the device, go time-major, preprocess frames, one-hot discrete actions."""
        missing = {"observations", "actions", "rewards"} - set(batch)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)}; expected observations, actions, rewards (B, L, ...)")
        frames = torch.as_tensor(np.asarray(batch["observations"]) if not torch.is_tensor(batch["observations"])
                                 else batch["observations"], device=self.device)
        actions = torch.as_tensor(batch["actions"], device=self.device)
        rewards = torch.as_tensor(batch["rewards"], device=self.device, dtype=torch.float32)
        size, length = frames.shape[:2]
        if frames.dtype != torch.uint8 or frames.shape[2:] != (64, 64, 3):
            raise ValueError(f"batch observations {tuple(frames.shape)} {frames.dtype}: expected (B, L, 64, 64, 3) uint8")
        expected = (size, length) if self.discrete else (size, length, self.action_size)
        if tuple(actions.shape) != expected or rewards.shape != (size, length):
            raise ValueError(f"batch actions {tuple(actions.shape)} / rewards {tuple(rewards.shape)}: expected "
                             f"{expected} / {(size, length)} for observations {tuple(frames.shape)}")
        if self.discrete:
            actions = one_hot_actions(actions, self.action_size)
        # One uint8 copy to time-major; the channel permute after it is a view whose frames are
        # channels-last in memory, so the encoder's (L*B, C, H, W) reshape needs no further copy.
        frames = frames.transpose(0, 1).contiguous()  # (B, L, H, W, C) -> (L, B, H, W, C)
        observations = preprocess_observation(frames, self.cfg.env.bit_depth, generator=self.generator)
        observations = observations.permute(0, 1, 4, 2, 3)  # (L, B, H, W, C) -> (L, B, C, H, W), a view
        return observations, actions.float().transpose(0, 1), rewards.transpose(0, 1)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, counters and the noise generator: loading it continues training identically.

        Holds tensors and plain numbers only, so ``torch.load(..., weights_only=True)`` reads it.
        """
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "skipped": self.skipped, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.skipped = int(state["updates"]), int(state["skipped"])
        self.generator.set_state(state["generator"])

    def weights(self) -> dict[str, torch.Tensor]:
        """The model weights alone, on the CPU: what is broadcast to actors."""
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
