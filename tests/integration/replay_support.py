"""Shared pieces of the replay tests: a real redis-server fixture and self-describing episodes.

Every frame of a test episode states which episode and step it is (bytes 0-3: episode number
and step as little-endian uint16), and actions, rewards and terminals follow from the same two
numbers, so any chunk can be checked against the episode it claims to come from: a torn or
shifted chunk cannot pass.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from common.episode import Episode, EpisodeInfo
from replay.server import EmbeddedRedis
from replay.spec import ReplaySpec
from replay.store import SequenceReplay

FRAME = (4, 4, 3)
TASK = "test-task"
SPEC = ReplaySpec(TASK, FRAME, "<f4", (2,))
"""The spec of make_episode's default episodes (continuous actions of size 2)."""
DISCRETE_SPEC = ReplaySpec(TASK, FRAME, "<i8", ())
"""The spec of make_episode(..., action_size=None)."""
_runs = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """One embedded redis-server per test module, in a temporary run directory."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("run")).start()
    yield server
    server.stop()


@pytest.fixture
def run_name(request) -> str:
    """A fresh namespace per test (all tests of a module share one server)."""
    return f"t{next(_runs)}-{request.node.name[:40]}".replace("[", "-").replace("]", "").replace(",", "-")


def make_episode(run: str, number: int, steps: int, *, frame=FRAME, action_size: int | None = 2,
                 terminal: bool | None = None, task: str = TASK) -> Episode:
    """Episode ``number`` of ``steps`` agent steps whose contents encode (number, step).

    ``action_size=None`` gives discrete actions; ``terminal`` defaults to odd numbers ending terminal.
    """
    size = int(np.prod(frame))
    t = np.arange(steps + 1)
    flat = (number * 131 + t[:, None] * 17 + np.arange(size)[None, :]) % 251  # (T+1, H*W*C)
    flat[:, 0], flat[:, 1] = number % 256, number // 256
    flat[:, 2], flat[:, 3] = t % 256, t // 256
    observations = flat.astype(np.uint8).reshape(steps + 1, *frame)
    if action_size is None:
        actions = ((number + np.arange(steps)) % 5).astype(np.int64)  # (T,)
    else:
        actions = (number + np.arange(steps)[:, None] / 1000 + np.arange(action_size)[None, :]).astype(np.float32)
    rewards = (number * 1000 + np.arange(steps)).astype(np.float32)
    terminals = np.zeros(steps, bool)
    terminals[-1] = bool(number % 2) if terminal is None else terminal
    info = EpisodeInfo(run=run, actor=number % 7, seed=number, episode_id=f"{run}.ep{number:05d}",
                       policy_version=0, task=task, env_steps=steps)
    return Episode(observations=observations, actions=actions, rewards=rewards, terminals=terminals, info=info)


def expected_chunk(episode: Episode, start: int, length: int) -> dict[str, np.ndarray]:
    """The contract, from the episode's own arrays: o_k.., a_{k-1}.., r_{k-1}.., terminal(o_t), is_first."""
    k, L = start, length
    actions = np.concatenate([np.zeros_like(episode.actions[:1]), episode.actions])
    rewards = np.concatenate([np.zeros(1, np.float32), episode.rewards])
    terminals = np.concatenate([np.zeros(1, bool), episode.terminals])
    is_first = np.zeros(L, bool)
    is_first[0] = k == 0
    return {"observations": episode.observations[k:k + L], "actions": actions[k:k + L],
            "rewards": rewards[k:k + L], "terminals": terminals[k:k + L], "is_first": is_first}


def identify_chunk(observations: np.ndarray) -> tuple[int, np.ndarray]:
    """(episode number, steps (L,)) read from a chunk's frames; raises if they name several episodes."""
    flat = observations.reshape(len(observations), -1).astype(np.int64)
    numbers = flat[:, 0] + 256 * flat[:, 1]
    assert (numbers == numbers[0]).all(), f"chunk mixes episodes {sorted(set(numbers.tolist()))}"
    return int(numbers[0]), flat[:, 2] + 256 * flat[:, 3]


def check_batch(batch: dict[str, np.ndarray], episode_of, length: int) -> list[tuple[int, int]]:
    """Assert every chunk is contiguous, within one episode and bit-exact; return (number, start) per chunk.

    ``episode_of(number)`` rebuilds the episode a chunk claims to come from.
    """
    found = []
    for b in range(len(batch["observations"])):
        number, steps = identify_chunk(batch["observations"][b])
        start = int(steps[0])
        assert (steps == np.arange(start, start + length)).all(), f"chunk steps {steps} are not consecutive"
        want = expected_chunk(episode_of(number), start, length)
        for name, value in want.items():
            np.testing.assert_array_equal(batch[name][b], value, err_msg=f"{name} of episode {number} at {start}")
        found.append((number, start))
    return found


def new_replay(server: EmbeddedRedis, run: str, **options) -> SequenceReplay:
    """The replay of ``run`` as its driver creates it: capacity and a spec matching make_episode (SPEC)."""
    options.setdefault("capacity_steps", 100_000)
    options.setdefault("spec", SPEC)
    return SequenceReplay(server.url, run, **options)
