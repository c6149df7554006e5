"""The run's spec comes from its configuration, never from its first episode (real redis-server)."""

from __future__ import annotations

import numpy as np
import pytest

from common.envs.base import ActionSpec, EnvSpec
from common.episode import EpisodeError
from replay import ReplayError, ReplaySpec, SequenceReplay
from replay.errors import MESSAGE_LIMIT
from tests.integration.replay_support import DISCRETE_SPEC, SPEC, check_batch, make_episode, new_replay


def test_an_episode_of_another_task_with_the_same_shapes_is_rejected(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        with pytest.raises(EpisodeError, match=r"its task 'walker-walk' differs from the run's task 'test-task'"):
            replay.add(make_episode(run_name, 0, 5, task="walker-walk"))
        assert replay.add(make_episode(run_name, 1, 5)) is True
        stats = replay.stats()
        assert (stats["replay/rejected"], stats["replay/episodes"]) == (1, 1)


def test_a_wrong_first_episode_is_rejected_and_locks_nothing_out(redis_server, run_name):
    with new_replay(redis_server, run_name) as replay:
        for wrong, says in ((make_episode(run_name, 0, 5, frame=(32, 32, 3)), r"frames \(32, 32, 3\) differ"),
                            (make_episode(run_name, 1, 5, action_size=3), r"actions of shape \(3,\) differ"),
                            (make_episode(run_name, 2, 5, action_size=None), "discrete actions differ")):
            with pytest.raises(EpisodeError, match=says):
                replay.add(wrong)
        assert replay.episode_ids() == []
        good = {n: make_episode(run_name, n, 6) for n in range(3, 6)}
        for episode in good.values():
            assert replay.add(episode) is True
        check_batch(replay.sample(16, 3), good.get, 3)
        assert replay.stats()["replay/rejected"] == 3
        with SequenceReplay(redis_server.url, run_name) as reader:
            assert reader.spec == SPEC  # what later processes read back


def test_a_second_creator_with_another_spec_or_capacity_is_refused(redis_server, run_name):
    new_replay(redis_server, run_name, capacity_steps=100).close()
    other = ReplaySpec("test-task", (64, 64, 3), "<f4", (2,))
    with pytest.raises(ReplayError, match=r"created with spec task 'test-task', frames \(4, 4, 3\), actions of "
                                          r"shape \(2,\), this process asks for .*frames \(64, 64, 3\).*pass the "
                                          r"run's spec .* or use a new run name") as info:
        new_replay(redis_server, run_name, capacity_steps=100, spec=other)
    assert len(str(info.value)) <= MESSAGE_LIMIT
    with pytest.raises(ReplayError, match="created with capacity_steps=100, this process asks for 200"):
        new_replay(redis_server, run_name, capacity_steps=200)
    with SequenceReplay(redis_server.url, run_name) as reader:  # actors and the learner pass neither
        assert (reader.capacity_steps, reader.spec) == (100, SPEC)
    with new_replay(redis_server, run_name, capacity_steps=100) as again:  # the same values: fine
        assert again.add(make_episode(run_name, 0, 3))


def test_nothing_is_added_before_a_spec_is_set(redis_server, run_name):
    with SequenceReplay(redis_server.url, run_name, capacity_steps=100) as replay:
        with pytest.raises(ReplayError, match=r"has no spec set; the run driver creates it with "
                                              r"SequenceReplay\(url, run, capacity_steps=..., spec=...\)"):
            replay.add(make_episode(run_name, 0, 3))
        assert replay.stats()["replay/rejected"] == 0 and replay.episode_ids() == []
    with new_replay(redis_server, run_name, capacity_steps=100) as driver:  # the driver comes: adding works
        assert driver.add(make_episode(run_name, 0, 3)) is True


def test_spec_for_env_and_of_episode_agree(run_name):
    continuous = EnvSpec("test-task", (4, 4, 3), ActionSpec(False, 2, (-1.0, -1.0), (1.0, 1.0)), 2, 100)
    discrete = EnvSpec("test-task", (4, 4, 3), ActionSpec(True, 5), 1, 100)
    assert ReplaySpec.for_env(continuous) == SPEC == ReplaySpec.of_episode(make_episode(run_name, 0, 3))
    assert ReplaySpec.for_env(discrete) == DISCRETE_SPEC
    assert ReplaySpec.of_episode(make_episode(run_name, 0, 3, action_size=None)) == DISCRETE_SPEC
    assert ReplaySpec.from_json(SPEC.to_json(), "here") == SPEC
    assert SPEC.row_bytes == 48 + 8 + 4 + 1 and DISCRETE_SPEC.action_bytes == 8
    assert ReplaySpec("t", tuple(np.array([4, 4, 3])), "<f4", (np.int64(2),)).frame == (4, 4, 3)


@pytest.mark.parametrize("fields, says", [
    (("", (4, 4, 3), "<f4", (2,)), "task must be a task id"),
    (("t", (4, 4), "<f4", (2,)), r"frame must be \(H, W, C\)"),
    (("t", (4, 0, 3), "<f4", (2,)), r"frame must be \(H, W, C\)"),
    (("t", (4, 4, 3), "float32", (2,)), "action_dtype must be '<f4'"),
    (("t", (4, 4, 3), "<i8", (2,)), r"does not fit action_dtype '<i8': expected \(\)"),
    (("t", (4, 4, 3), "<f4", ()), r"expected \(A,\) with A >= 1"),
    (("t", (4.0, 4, 3), "<f4", (2,)), "must hold integers"),
])
def test_bad_specs_are_refused(fields, says):
    with pytest.raises(ReplayError, match=says):
        ReplaySpec(*fields)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"task": "t"}', b"\xff" * 10_000,
                                 SPEC.to_json().replace('"<f4"', '"<f8"').encode()])
def test_a_stored_spec_that_is_not_one_is_named_briefly(raw):
    with pytest.raises(ReplayError, match="KEY is not a replay spec") as info:
        ReplaySpec.from_json(raw, "KEY")
    assert len(str(info.value)) <= MESSAGE_LIMIT
