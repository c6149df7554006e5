"""Pixel environments: ``make_env(task, seed)`` for ``dmc:``, ``atari:``, ``gym:`` and ``synthetic:`` task ids.

Every environment yields (64, 64, 3) uint8 frames, repeats each action ``action_repeat``
times with rewards summed, and ends an episode after ``max_env_steps`` env steps.
Simulators are imported only when a task of their family is made.
"""

from __future__ import annotations

from common.envs.base import ActionSpec, EnvSpec, PixelEnv, Step, resize_area
from common.envs.tasks import FAMILIES, UnknownTaskError, default_action_repeat, parse_task

__all__ = ["ActionSpec", "EnvSpec", "PixelEnv", "Step", "FAMILIES", "UnknownTaskError", "make_env",
           "make_env_from_config", "parse_task", "resize_area"]


def make_env(task: str, seed: int = 0, *, action_repeat: int | None = None, max_env_steps: int = 1000,
             image_size: int = 64) -> PixelEnv:
    """Build a pixel environment; ``action_repeat`` defaults to the task's (PlaNet's for DMC, 4 for Atari)."""
    family, name = parse_task(task)
    kwargs = dict(action_repeat=action_repeat or default_action_repeat(task), max_env_steps=max_env_steps,
                  image_size=image_size)
    if family == "dmc":
        from common.envs.dmc import DMCEnv

        return DMCEnv(name, seed, **kwargs)
    if family == "atari":
        from common.envs.atari import AtariEnv

        return AtariEnv(name, seed, **kwargs)
    if family == "synthetic":
        from common.envs.synthetic import SyntheticEnv

        return SyntheticEnv(name, seed, **kwargs)
    from common.envs.gym_env import GymEnv

    return GymEnv(name, seed, **kwargs)


def make_env_from_config(env_config, seed: int) -> PixelEnv:
    """``make_env`` with the task, repeat, episode length and frame size of a :class:`common.config.EnvConfig`."""
    return make_env(env_config.task, seed, action_repeat=env_config.action_repeat,
                    max_env_steps=env_config.max_env_steps, image_size=env_config.image_size)
