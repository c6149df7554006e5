"""Atari games through ale-py and Gymnasium; frames max-pooled over the last two of a repeat, resized to 64x64."""

from __future__ import annotations

import numpy as np

from common.envs.base import ActionSpec, PixelEnv
from common.envs.tasks import UnknownTaskError


def _gym():
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    return gymnasium


class AtariEnv(PixelEnv):
    """ALE v5 game with frame skip 1 underneath; PixelEnv's action repeat is the frame skip.

    Sticky actions (repeat_action_probability 0.25) stay on, as in the ALE v5 defaults.
    Losing a life is not terminal; game over is.
    """

    def __init__(self, game: str, seed: int, *, action_repeat: int, max_env_steps: int, image_size: int):
        gym = _gym()
        try:
            self._env = gym.make(f"ALE/{game}-v5", frameskip=1, obs_type="rgb", full_action_space=False,
                                 max_episode_steps=None)
        except gym.error.Error as error:
            raise UnknownTaskError(f"unknown Atari game 'atari:{game}' ({error}); game names are "
                                   f"CamelCase as in ALE, e.g. atari:MsPacman, atari:Pong, atari:Breakout") from None
        self._seed = seed
        self._frames: list[np.ndarray] = []
        action = ActionSpec(discrete=True, size=int(self._env.action_space.n))
        super().__init__(f"atari:{game}", action, action_repeat=action_repeat, max_env_steps=max_env_steps,
                         image_size=image_size)

    def _reset(self) -> None:
        # Seed once; later resets continue the same random stream.
        frame, _ = self._env.reset(seed=self._seed)
        self._seed = None
        self._frames = [frame]

    def _step(self, action: int) -> tuple[float, bool, bool]:
        frame, reward, terminated, truncated, _ = self._env.step(action)
        self._frames = [self._frames[-1], frame]
        return float(reward), bool(terminated), bool(terminated or truncated)

    def _render(self) -> np.ndarray:
        # Max over the last two frames removes the sprite flicker of many games (DQN's preprocessing).
        return np.maximum.reduce(self._frames)

    def close(self) -> None:
        self._env.close()
