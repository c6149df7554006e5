"""The pixel-environment interface every task family implements.

An agent step repeats the action R times (action repeat), sums the rewards and
renders one frame at the end; the episode ends at a true terminal state or
after ``max_env_steps`` environment steps (a time-limit truncation, which is
not terminal: the discount stays 1).
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionSpec:
    """Continuous actions are float32 vectors of shape (A,) in [low, high]; discrete ones are ints in [0, n)."""

    discrete: bool
    size: int
    """A for continuous actions; the number of actions n for discrete ones (the one-hot size)."""
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator) -> np.ndarray | int:
        if self.discrete:
            return int(rng.integers(self.size))
        return rng.uniform(self.low, self.high).astype(np.float32)

    def check(self, action) -> np.ndarray | int:
        """Validate one action and return it in the environment's form (clipped to bounds when continuous)."""
        if self.discrete:
            value = np.asarray(action)
            if value.shape != () or not np.issubdtype(value.dtype, np.integer) or not 0 <= value < self.size:
                raise ValueError(f"action {action!r}: expected one integer in [0, {self.size}) for this discrete task")
            return int(value)
        value = np.asarray(action, dtype=np.float32)
        if value.shape != (self.size,):
            raise ValueError(f"action shape {value.shape}: expected ({self.size},) for this continuous task")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"action {value.tolist()} has NaN or inf; check the planner's output")
        return np.clip(value, self.low, self.high)

    def describe(self) -> str:
        if self.discrete:
            return f"discrete, {self.size} actions"
        low, high = (min(self.low), max(self.high)) if self.low else (None, None)
        return f"continuous, shape ({self.size},), bounds [{low:g}, {high:g}]"


@dataclass(frozen=True)
class EnvSpec:
    task: str
    obs_shape: tuple[int, int, int]
    """(H, W, C) of each uint8 frame."""
    action: ActionSpec
    action_repeat: int
    max_env_steps: int

    @property
    def episode_steps(self) -> int:
        """Agent steps in an episode that runs to the time limit."""
        return -(-self.max_env_steps // self.action_repeat)


@dataclass(frozen=True)
class Step:
    observation: np.ndarray
    """(H, W, C) uint8 frame after the repeated action."""
    reward: float
    """Sum of the rewards of the repeated env steps."""
    terminal: bool
    """A true terminal state was reached (discount 0)."""
    last: bool
    """The episode is over: terminal, or the time limit was reached."""
    env_steps: int
    """Env steps this agent step took (action_repeat, or fewer if the episode ended inside it)."""


class PixelEnv(abc.ABC):
    """Action repeat, time limit and frame size in one place; subclasses wrap one simulator."""

    def __init__(self, task: str, action: ActionSpec, *, action_repeat: int, max_env_steps: int, image_size: int):
        if action_repeat < 1 or max_env_steps < 1:
            raise ValueError(f"action_repeat ({action_repeat}) and max_env_steps ({max_env_steps}) must be >= 1")
        self.spec = EnvSpec(task, (image_size, image_size, 3), action, action_repeat, max_env_steps)
        self._env_steps = 0
        self._done = True

    def reset(self) -> np.ndarray:
        self._reset()
        self._env_steps, self._done = 0, False
        return self._frame()

    def step(self, action) -> Step:
        if self._done:
            raise RuntimeError(f"{self.spec.task}: step() after the episode ended; call reset() first")
        action = self.spec.action.check(action)
        reward, terminal, last, taken = 0.0, False, False, 0
        for _ in range(self.spec.action_repeat):
            r, terminal, last = self._step(action)
            reward += r
            taken += 1
            self._env_steps += 1
            last = last or terminal or self._env_steps >= self.spec.max_env_steps
            if last:
                break
        self._done = last
        return Step(self._frame(), float(reward), bool(terminal), bool(last), taken)

    def close(self) -> None:
        """Release the simulator; the default has nothing to release."""

    def _frame(self) -> np.ndarray:
        frame = self._render()
        size = self.spec.obs_shape[:2]
        if frame.shape[:2] != size:
            frame = resize_area(frame, size)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    @abc.abstractmethod
    def _reset(self) -> None:
        """Start a new episode in the simulator."""

    @abc.abstractmethod
    def _step(self, action) -> tuple[float, bool, bool]:
        """One env step: (reward, terminal, simulator says the episode is over)."""

    @abc.abstractmethod
    def _render(self) -> np.ndarray:
        """The current frame, (h, w, 3) uint8 at any size."""


def resize_area(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize of an (h, w, C) uint8 frame to ``size``, exact for any ratio, numpy only."""
    rows = _area_weights(frame.shape[0], size[0])  # (H, h)
    cols = _area_weights(frame.shape[1], size[1])  # (W, w)
    out = np.einsum("Hh,hwc,Ww->HWc", rows, frame.astype(np.float32), cols, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix whose row i averages the source pixels covered by output pixel i."""
    edges = np.arange(dst + 1) * (src / dst)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(src)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
