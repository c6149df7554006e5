"""Any Gymnasium environment that renders rgb_array frames, observed through its pictures alone."""

from __future__ import annotations

import numpy as np

from common.envs.base import ActionSpec, PixelEnv
from common.envs.tasks import UnknownTaskError


class GymEnv(PixelEnv):
    def __init__(self, env_id: str, seed: int, *, action_repeat: int, max_env_steps: int, image_size: int):
        import gymnasium as gym

        try:
            self._env = gym.make(env_id, render_mode="rgb_array")
        except gym.error.Error as error:
            raise UnknownTaskError(f"unknown Gymnasium environment 'gym:{env_id}' ({error}); "
                                   f"use a registered id such as gym:Pendulum-v1 or gym:CartPole-v1") from None
        if self._env.metadata.get("render_modes") and "rgb_array" not in self._env.metadata["render_modes"]:
            raise UnknownTaskError(f"gym:{env_id} does not render rgb_array frames "
                                   f"(it offers {self._env.metadata['render_modes']}); Orrery learns from pixels")
        space = self._env.action_space
        if isinstance(space, gym.spaces.Discrete):
            action = ActionSpec(discrete=True, size=int(space.n))
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            action = ActionSpec(discrete=False, size=int(space.shape[0]),
                                low=tuple(float(x) for x in space.low), high=tuple(float(x) for x in space.high))
        else:
            raise UnknownTaskError(f"gym:{env_id} has action space {space}; Orrery supports Discrete and 1-D Box")
        self._seed = seed
        super().__init__(f"gym:{env_id}", action, action_repeat=action_repeat, max_env_steps=max_env_steps,
                         image_size=image_size)

    def _reset(self) -> None:
        self._env.reset(seed=self._seed)
        self._seed = None

    def _step(self, action) -> tuple[float, bool, bool]:
        _, reward, terminated, truncated, _ = self._env.step(action)
        return float(reward), bool(terminated), bool(terminated or truncated)

    def _render(self) -> np.ndarray:
        return np.asarray(self._env.render(), dtype=np.uint8)

    def close(self) -> None:
        self._env.close()
