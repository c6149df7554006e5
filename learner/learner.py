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
from common.device import PRECISIONS, resolve_precision
from common.envs.preprocess import preprocess_observation
from learner.objectives import model_loss
from learner.world_model import WorldModel, one_hot_actions

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
        self.compiled = cfg.train.compile if compile is None else compile
        self._forward = torch.compile(self._loss) if self.compiled else self._loss
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.learning_rate, eps=cfg.train.adam_eps)
        self.seed = seed
        self.generator = torch.Generator(self.device).manual_seed(seed)
        # Compiled, the model's latent samples come from torch's default generator of the device (seeded above):
        # a torch.Generator argument breaks the graph at every sampling step, and inductor draws the default
        # generator's numbers inside its kernels. Frame dequantisation noise (outside the compiled loss) and
        # every eager run use ``generator``, whose state checkpoints keep.
        self.loss_generator: torch.Generator | None = None if self.compiled else self.generator
        self.updates = 0
        self.skipped = 0

    # ------------------------------------------------------------ training

    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step on a (B, L) chunk batch; returns ``learner/*`` metrics.

        A non-finite loss or gradient is never applied: the step is skipped and counted in
        ``learner/skipped_updates``. The host waits for the device once per update: forward,
        backward and clipping are queued without a pause, then one copy brings every metric and
        the finite flag back, and the optimiser step is queued (or skipped) behind it.
        """
        start = time.perf_counter()
        observations, actions, rewards = self._prepare(batch)
        self.model.train()
        with self._autocast():
            total, _, tensors = self._forward(observations, actions, rewards)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # a non-finite loss gives non-finite gradients, caught below with them
        tensors["learner/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        finite_t = torch.isfinite(total) & torch.isfinite(tensors["learner/grad_norm"])
        # The one device-to-host copy of the update: all metrics and the finite flag.
        values = torch.stack([t.detach().float() for t in tensors.values()] + [finite_t.float()]).tolist()
        metrics, finite = dict(zip(tensors, values[:-1])), bool(values[-1])
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
        return model_loss(self.model, observations, actions, rewards, self.cfg.loss, self.loss_generator)

    def stage(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A replay batch as CPU tensors, in page-locked memory when the learner is on a GPU.

        The prefetcher calls this on its own thread (``Prefetcher(..., transform=learner.stage)``), so
        the pinning copy overlaps the update in flight and :meth:`update` copies the batch to the
        device asynchronously (``non_blocking``), without a pageable staging copy.
        """
        out = {}
        for key in ("observations", "actions", "rewards"):
            if key in batch:
                tensor = batch[key] if torch.is_tensor(batch[key]) else torch.from_numpy(np.ascontiguousarray(batch[key]))
                out[key] = tensor.pin_memory() if self.device.type == "cuda" and not tensor.is_pinned() else tensor
        return {**batch, **out}

    def _prepare(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check shapes, move to the device, go time-major, preprocess frames, one-hot discrete actions."""
        missing = {"observations", "actions", "rewards"} - set(batch)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)}; expected observations, actions, rewards (B, L, ...)")
        frames, actions, rewards = (self._to_device(batch[key]) for key in ("observations", "actions", "rewards"))
        rewards = rewards.float()
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

    def _to_device(self, value: Any) -> torch.Tensor:
        """One array to the device: asynchronous from pinned memory (see :meth:`stage`), a plain copy otherwise."""
        tensor = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
        return tensor.to(self.device, non_blocking=tensor.is_pinned())

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
        """Restore :meth:`state_dict` (load it on the CPU: ``learner.checkpoint.load``; tensors move here).

        A checkpoint made on another kind of device (a GPU run resumed on a CPU, or the reverse) holds
        the other generator's state, which this one cannot take: the noise generator is then seeded
        from (seed, updates) instead, and training continues, no longer bit-identical to the original.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.skipped = int(state["updates"]), int(state["skipped"])
        generator_state = state["generator"].cpu()
        try:
            self.generator.set_state(generator_state)
        except RuntimeError:  # a CPU generator's 5056-byte state on a CUDA one (16 bytes), or the reverse
            self.generator.manual_seed(int(np.random.SeedSequence([self.seed, self.updates]).generate_state(1)[0]))

    def weights(self) -> dict[str, torch.Tensor]:
        """The model weights alone, on the CPU: what is broadcast to actors."""
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}

