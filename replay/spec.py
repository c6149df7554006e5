"""ReplaySpec: what every episode of a run shares (task, frame shape, action dtype and shape).

The run's configuration sets it, never its first episode: the process that creates the run's replay
(the run driver) passes ``ReplaySpec.for_env(env.spec)`` and the replay stores it once; every insert is
compared against it in the same atomic script that stores the episode.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from replay.errors import ReplayError, bounded

ACTION_DTYPES = {"<f4": np.dtype("<f4"), "<i8": np.dtype("<i8")}
"""Stored action dtype -> its NumPy dtype: continuous float32 vectors, discrete int64 indices."""


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """The shapes and task of one run's episodes, as the replay stores and checks them."""

    task: str
    """Task id of the run's environment (EnvSpec.task; EpisodeInfo.task of every episode)."""
    frame: tuple[int, int, int]
    """(H, W, C) of every uint8 frame o_t."""
    action_dtype: str
    """"<f4" (continuous actions a_t, float32) or "<i8" (discrete action indices, int64)."""
    action_shape: tuple[int, ...]
    """Shape of one action: (A,) for continuous actions, () for discrete ones."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", _ints(self.frame))
        object.__setattr__(self, "action_shape", _ints(self.action_shape))
        if not isinstance(self.task, str) or not 1 <= len(self.task) <= 256:
            raise ReplayError(f"ReplaySpec.task must be a task id of 1..256 characters, got {_short(self.task)}")
        if len(self.frame) != 3 or min(self.frame) < 1:
            raise ReplayError(f"ReplaySpec.frame must be (H, W, C) of positive integers, got {self.frame}")
        if self.action_dtype not in ACTION_DTYPES:
            raise ReplayError(f"ReplaySpec.action_dtype must be '<f4' (continuous) or '<i8' (discrete), got "
                              f"{_short(self.action_dtype)}")
        wanted = "()" if self.action_dtype == "<i8" else "(A,) with A >= 1"
        if (self.action_shape != () if self.action_dtype == "<i8"
                else len(self.action_shape) != 1 or self.action_shape[0] < 1):
            raise ReplayError(f"ReplaySpec.action_shape {self.action_shape} does not fit action_dtype "
                              f"{self.action_dtype!r}: expected {wanted}")

    @classmethod
    def for_env(cls, env_spec) -> ReplaySpec:
        """The spec of a run on the environment described by ``env_spec`` (common.envs.base.EnvSpec)."""
        if env_spec.action.discrete:
            return cls(env_spec.task, tuple(env_spec.obs_shape), "<i8", ())
        return cls(env_spec.task, tuple(env_spec.obs_shape), "<f4", (env_spec.action.size,))

    @classmethod
    def of_episode(cls, episode) -> ReplaySpec:
        """The spec an episode (common.episode.Episode) has: compare it with the run's."""
        return cls(episode.info.task, tuple(episode.observations.shape[1:]),
                   "<i8" if episode.discrete else "<f4", tuple(episode.actions.shape[1:]))

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame: H * W * C."""
        return math.prod(self.frame)

    @property
    def action_bytes(self) -> int:
        """Bytes of one action row."""
        return ACTION_DTYPES[self.action_dtype].itemsize * math.prod(self.action_shape)

    @property
    def row_bytes(self) -> int:
        """Stored bytes per frame row t: frame, action, reward (float32), terminal (one byte)."""
        return self.frame_bytes + self.action_bytes + 5

    def to_json(self) -> str:
        """Canonical JSON, as stored in the run's config hash (and compared by the ADD script)."""
        return json.dumps({"task": self.task, "frame": list(self.frame), "action_dtype": self.action_dtype,
                           "action_shape": list(self.action_shape)}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str, where: str) -> ReplaySpec:
        """Parse a stored spec; ReplayError naming ``where`` (the key) when it is not one."""
        try:
            value: Any = json.loads(raw)
            if not isinstance(value, dict) or set(value) != {"task", "frame", "action_dtype", "action_shape"}:
                raise ValueError("keys")
            return cls(value["task"], tuple(value["frame"]), value["action_dtype"], tuple(value["action_shape"]))
        except (ValueError, TypeError, ReplayError, RecursionError):
            raise ReplayError(bounded(f"replay cannot use its stored state: {where} is not a replay spec (JSON "
                                      f"with task, frame, action_dtype, action_shape); repair it with the run's "
                                      f"ReplaySpec.to_json() or start a new run")) from None

    def describe(self, part: str | None = None) -> str:
        """Short text for messages: ``part`` "task", "frame" or "action", or all three."""
        parts = {"task": f"task {_short(self.task)}", "frame": f"frames {self.frame}",
                 "action": "discrete actions" if self.action_dtype == "<i8"
                 else f"actions of shape {self.action_shape}"}
        return parts[part] if part in parts else ", ".join(parts.values())


def _ints(values) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise ReplayError(f"ReplaySpec: expected a shape tuple, got {_short(values)}") from None
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in items):
        raise ReplayError(f"ReplaySpec: shape {_short(items)} must hold integers")
    return tuple(int(n) for n in items)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
