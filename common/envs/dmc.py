"""DeepMind Control Suite tasks from pixels, rendered headless (MuJoCo EGL by default)."""

from __future__ import annotations

import difflib
import os

import numpy as np

from common.envs.base import ActionSpec, PixelEnv
from common.envs.tasks import UnknownTaskError

DOMAIN_ALIASES = {"cup": "ball_in_cup"}
"""Short domain names used in task ids (PlaNet's 'cup-catch') mapped to dm_control's."""

CAMERA = {"quadruped": 2}
"""Camera per domain; PlaNet renders camera 0 everywhere else."""

SHADOW_SIZE = 512
"""Side of MuJoCo's shadow map, in texels (the suite's models ask for 2048).

Each frame renders the shadow map before the scene, and with software GL (llvmpipe, the headless
EGL of a machine without a GPU) a 2048 x 2048 map is most of the cost of a 64 x 64 frame. At 512
the frames differ from 2048's by 0.005-0.025 of 255 on average (cartpole: identical; shadow edges
move by a pixel at most), and tests/benchmarks/bench_envs.py steps 29-50 % more frames per second
(cup-catch: 11 %). Set before the first render, which allocates the map.
"""


def _suite():
    # dm_control picks its GL backend when first imported: default to headless EGL
    # unless the user chose one (MUJOCO_GL=osmesa, glfw, ...).
    os.environ.setdefault("MUJOCO_GL", "egl")
    from absl import logging as absl_logging
    from dm_control import suite

    # dm_control warns about deprecated attributes of its own model files on every load.
    absl_logging.set_verbosity(absl_logging.ERROR)

    return suite


def resolve(name: str) -> tuple[str, str]:
    """``cheetah-run`` -> ('cheetah', 'run'), checked against the suite's task list."""
    suite = _suite()
    domain, sep, task = name.partition("-")
    domain = DOMAIN_ALIASES.get(domain, domain)
    if not sep or (domain, task) not in suite.ALL_TASKS:
        known = [f"{d}-{t}" for d, t in sorted(suite.ALL_TASKS)]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean 'dmc:{close[0]}'?)" if close else ""
        raise UnknownTaskError(f"unknown dm_control task 'dmc:{name}'{hint}; known tasks: "
                               + ", ".join(f"dmc:{k}" for k in known))
    return domain, task


class DMCEnv(PixelEnv):
    def __init__(self, name: str, seed: int, *, action_repeat: int, max_env_steps: int, image_size: int):
        domain, task = resolve(name)
        # The suite's own time limit is lifted: max_env_steps is the one limit (PixelEnv).
        self._env = _suite().load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
        quality = self._env.physics.model.vis.quality
        quality.shadowsize = min(int(quality.shadowsize), SHADOW_SIZE)
        self._camera = CAMERA.get(domain, 0)
        self._size = image_size
        spec = self._env.action_spec()
        action = ActionSpec(discrete=False, size=int(spec.shape[0]),
                            low=tuple(float(x) for x in spec.minimum), high=tuple(float(x) for x in spec.maximum))
        super().__init__(f"dmc:{name}", action, action_repeat=action_repeat, max_env_steps=max_env_steps,
                         image_size=image_size)

    def _reset(self) -> None:
        self._env.reset()

    def _step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        time_step = self._env.step(action)
        terminal = time_step.last() and time_step.discount == 0.0
        return float(time_step.reward or 0.0), terminal, time_step.last()

    def _render(self) -> np.ndarray:
        return self._env.physics.render(self._size, self._size, camera_id=self._camera)

    def close(self) -> None:
        self._env.close()
