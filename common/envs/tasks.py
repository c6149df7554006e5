"""Task ids and their defaults; imports no simulator, so configs and CLIs can read it cheaply.

A task id is ``<family>:<name>``:

- ``dmc:<domain>-<task>`` -- DeepMind Control Suite, e.g. ``dmc:cheetah-run``, ``dmc:cup-catch``
- ``atari:<Game>`` -- Arcade Learning Environment through Gymnasium, e.g. ``atari:MsPacman``
- ``gym:<id>`` -- any Gymnasium environment that renders ``rgb_array``, e.g. ``gym:Pendulum-v1``
- ``synthetic:reach`` -- a square steered to the centre of the frame (common/envs/synthetic.py): learnt in minutes
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "dmc": "dm_control suite, dmc:<domain>-<task>, e.g. dmc:cheetah-run",
    "atari": "Arcade Learning Environment, atari:<Game>, e.g. atari:MsPacman",
    "gym": "any Gymnasium env that renders rgb_array, gym:<id>, e.g. gym:Pendulum-v1",
    "synthetic": "Orrery's own quick pixel task, synthetic:reach",
}

ACTION_REPEAT: dict[str, int] = {
    "cartpole-swingup": 8,
    "reacher-easy": 4,
    "cheetah-run": 4,
    "finger-spin": 2,
    "cup-catch": 4,
    "walker-walk": 2,
}
"""PlaNet's action repeat R per DMC task (Hafner et al. 2019, Table 1 settings)."""

PLANET_AT_100_EPISODES: dict[str, float] = {
    "cartpole-swingup": 297.0,
    "reacher-easy": 20.0,
    "cheetah-run": 138.0,
    "finger-spin": 136.0,
    "cup-catch": 0.0,
    "walker-walk": 224.0,
}
"""PlaNet's return per DMC task after 100 episodes (100k env steps): the baseline data PlaNet's author shared
for the CURL paper's Table 1. The reference Orrery's README results and reports are drawn against."""

PLANET_BUDGET_ENV_STEPS = 100_000
"""The env steps those scores were reached in: 100 episodes of 1000 env steps."""


def planet_reference(task: str) -> float | None:
    """PlaNet's 100-episode return for a ``dmc:`` task id in its table, else None."""
    family, _, name = task.partition(":")
    return PLANET_AT_100_EPISODES.get(name) if family == "dmc" else None


ATARI_FRAME_SKIP = 4
"""Frames per agent step on Atari (the usual ALE frame skip; Buesing et al. use 4 as well)."""


class UnknownTaskError(ValueError):
    """A task id that names no known family or environment; the message lists what is available."""


def families_help() -> str:
    return "; ".join(FAMILIES.values())


def parse_task(task: str) -> tuple[str, str]:
    """Split ``family:name``; raise :class:`UnknownTaskError` naming the families for anything else."""
    family, sep, name = task.partition(":")
    if not sep or family not in FAMILIES or not name:
        raise UnknownTaskError(f"unknown task {task!r}: a task is family:name, one of {families_help()}")
    return family, name


def default_action_repeat(task: str) -> int:
    family, name = parse_task(task)
    if family == "dmc":
        return ACTION_REPEAT.get(name, 1)
    if family == "atari":
        return ATARI_FRAME_SKIP
    return 1
