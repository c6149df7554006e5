"""``synthetic:reach``: a pixel task small enough that PlaNet learns it in minutes on two CPU cores.

A square (10 x 10 pixels, white) sits on a dark 64 x 64 field with a faint cross at the centre. The
action (2,) in [-1, 1] moves it by ``SPEED`` x action of the field's width per env step (clipped at the
walls). The reward of an env step is exp(-(d / RADIUS)^2), d the distance of the square's centre from
the field's centre in field widths: 1 at the centre, 0.24 at 0.3 (the nearest an episode starts), 0.0004
in a corner. An episode starts with the square at a random place at least ``START_DISTANCE`` from the
centre.

It exercises everything a world model and planner need, only faster than a simulator: the model must
learn from pixels that actions move the square, where the square is, and what the reward of a place
is; the planner must steer toward reward. A random policy wanders and collects little (13 +- 13 of a
possible 100 per 100-step episode, over 100 episodes); steering straight to the centre collects 97.
What it does not exercise: contacts, momentum, partial observability. It renders with numpy alone (no simulator, no OpenGL), so an env step costs microseconds.
"""

from __future__ import annotations

import numpy as np

from common.envs.base import ActionSpec, PixelEnv
from common.envs.tasks import UnknownTaskError

TASKS = ("reach",)
SPEED = 0.05
"""Field widths the square moves per env step at full action."""
RADIUS = 0.25
"""Field widths over which the reward falls to 1/e."""
START_DISTANCE = 0.3
"""Least distance (field widths) of an episode's start from the centre."""
SQUARE = 10
"""Side of the square in pixels of the 64 x 64 field."""


class SyntheticEnv(PixelEnv):
    def __init__(self, name: str, seed: int, *, action_repeat: int, max_env_steps: int, image_size: int):
        if name not in TASKS:
            raise UnknownTaskError(f"unknown synthetic task 'synthetic:{name}'; known: "
                                   f"{', '.join('synthetic:' + t for t in TASKS)}")
        super().__init__(f"synthetic:{name}", ActionSpec(discrete=False, size=2, low=(-1.0, -1.0), high=(1.0, 1.0)),
                         action_repeat=action_repeat, max_env_steps=max_env_steps, image_size=image_size)
        self._rng = np.random.default_rng(seed)
        self._position = np.full(2, 0.5)
        self._field = np.full((64, 64, 3), 24, np.uint8)
        self._field[31:33, 26:38] = self._field[26:38, 31:33] = 70  # the faint cross at the centre

    def _reset(self) -> None:
        while True:
            position = self._rng.uniform(0.0, 1.0, 2)
            if np.linalg.norm(position - 0.5) >= START_DISTANCE:
                self._position = position
                return

    def _step(self, action) -> tuple[float, bool, bool]:
        self._position = np.clip(self._position + SPEED * np.asarray(action, dtype=np.float64), 0.0, 1.0)
        distance = float(np.linalg.norm(self._position - 0.5))
        return float(np.exp(-(distance / RADIUS) ** 2)), False, False

    def _render(self) -> np.ndarray:
        frame = self._field.copy()
        row, col = np.rint(self._position * (64 - SQUARE)).astype(int)  # (y, x) of the top-left corner
        frame[row:row + SQUARE, col:col + SQUARE] = 255
        return frame
