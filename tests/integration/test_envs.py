"""Real environments: the six PlaNet DMC tasks (headless EGL), Atari MsPacman, and Gymnasium tasks."""

import numpy as np
import pytest

from actors.rollout import random_policy, run_episode
from common.config import load_config
from common.envs import UnknownTaskError, make_env, make_env_from_config
from common.episode import decode, encode

PLANET_TASKS = {  # task -> (action repeat, action size)
    "dmc:cartpole-swingup": (8, 1),
    "dmc:reacher-easy": (4, 2),
    "dmc:cheetah-run": (4, 6),
    "dmc:finger-spin": (2, 2),
    "dmc:cup-catch": (4, 2),
    "dmc:walker-walk": (2, 6),
}


def play(env, seed=0, max_steps=None):
    """Random actions until the episode ends; frames, summed rewards and flags per agent step."""
    rng = np.random.default_rng(seed)
    frames, steps = [env.reset()], []
    while True:
        step = env.step(env.spec.action.sample(rng))
        frames.append(step.observation)
        steps.append(step)
        if step.last or (max_steps and len(steps) == max_steps):
            return np.stack(frames), steps


def assert_pixels(frames):
    assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3)
    changed = [not np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:])]
    # The scene moves under random actions; a still frame or two (a body at rest) is allowed.
    assert np.mean(changed) > 0.9, f"only {sum(changed)} of {len(changed)} steps changed the frame"
    assert frames.std() > 5, "frames look blank: is headless rendering working?"


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(PLANET_TASKS))
def test_dmc_task_full_episode(task):
    repeat, action_size = PLANET_TASKS[task]
    env = make_env(task, seed=1)
    assert env.spec.action_repeat == repeat
    assert not env.spec.action.discrete and env.spec.action.size == action_size
    assert env.spec.action.low == (-1.0,) * action_size and env.spec.action.high == (1.0,) * action_size
    frames, steps = play(env)
    env.close()
    assert len(steps) == 1000 // repeat
    assert sum(s.env_steps for s in steps) == 1000
    assert all(s.env_steps == repeat for s in steps)
    assert not any(s.terminal for s in steps), "DMC episodes end by time limit, never terminal"
    assert_pixels(frames)
    assert all(np.isfinite(s.reward) and 0.0 <= s.reward <= repeat for s in steps), "DMC rewards are in [0, 1] per env step"


def test_dmc_action_repeat_sums_rewards():
    """Two envs with the same seed: one step at repeat 4 equals four steps at repeat 1, reward summed."""
    action = np.full(6, 0.5, np.float32)
    fast, slow = make_env("dmc:cheetah-run", 3, action_repeat=4), make_env("dmc:cheetah-run", 3, action_repeat=1)
    fast.reset(), slow.reset()
    for _ in range(3):
        big = fast.step(action)
        small = [slow.step(action) for _ in range(4)]
        assert big.reward == pytest.approx(sum(s.reward for s in small), abs=1e-6)
        assert np.array_equal(big.observation, small[-1].observation)


def test_dmc_seed_determinism():
    a, b = make_env("dmc:cup-catch", 5), make_env("dmc:cup-catch", 5)
    assert np.array_equal(play(a, max_steps=10)[0], play(b, max_steps=10)[0])
    c = make_env("dmc:cup-catch", 6)
    assert not np.array_equal(play(a, max_steps=10)[0][0], play(c, max_steps=10)[0][0])


def test_dmc_frames_with_the_smaller_shadow_map_match_the_suites_own():
    """SHADOW_SIZE keeps frames what the suite's own 2048-texel shadow map renders, up to shadow edges."""
    from common.envs.dmc import SHADOW_SIZE, _suite
    suite = _suite()  # dm_control imported with the project's headless GL choice
    ours = make_env("dmc:walker-walk", 2, action_repeat=1)
    theirs = suite.load("walker", "walk", task_kwargs={"random": 2, "time_limit": float("inf")})
    assert theirs.physics.model.vis.quality.shadowsize == 2048 > SHADOW_SIZE
    assert ours._env.physics.model.vis.quality.shadowsize == SHADOW_SIZE
    ours.reset(), theirs.reset()
    action = np.full(ours.spec.action.size, 0.3, np.float32)
    for _ in range(5):
        frame = ours.step(action).observation.astype(float)
        theirs.step(action)
    difference = np.abs(frame - theirs.physics.render(64, 64, camera_id=0).astype(float))
    assert frame.shape == (64, 64, 3)
    assert difference.mean() < 0.2 and np.mean(difference > 16) < 0.01


def test_time_limit_from_config_is_a_truncation():
    env = make_env_from_config(load_config("dmc-cartpole-swingup+debug").env, seed=0)
    frames, steps = play(env)
    assert len(steps) == 200 // 8 and steps[-1].last and not steps[-1].terminal
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))


def test_atari_mspacman():
    env = make_env("atari:MsPacman", seed=0)
    spec = env.spec
    assert spec.action.discrete and spec.action.size == 9 and spec.action_repeat == 4
    frames, steps = play(env, max_steps=60)
    assert frames.shape == (61, 64, 64, 3) and frames.dtype == np.uint8
    assert sum(not np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:])) > 30
    assert all(s.env_steps == 4 for s in steps)
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        env.step(9)


def test_gym_continuous_and_discrete():
    pendulum = make_env("gym:Pendulum-v1", seed=0)
    assert not pendulum.spec.action.discrete and pendulum.spec.action.size == 1
    assert pendulum.spec.action.low == (-2.0,) and pendulum.spec.action.high == (2.0,)
    frames, steps = play(pendulum)
    assert len(steps) == 200 and not steps[-1].terminal  # Pendulum's own time limit: a truncation
    assert_pixels(frames)
    cartpole = make_env("gym:CartPole-v1", seed=0)
    assert cartpole.spec.action.discrete and cartpole.spec.action.size == 2
    frames, steps = play(cartpole)
    assert steps[-1].terminal and frames.shape[1:] == (64, 64, 3)


@pytest.mark.parametrize("action, match", [
    (np.zeros(5, np.float32), r"shape \(5,\)"),
    (np.array([np.nan] * 6, np.float32), "NaN"),
])
def test_bad_continuous_actions(action, match):
    env = make_env("dmc:cheetah-run", 0)
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_out_of_bounds_actions_are_clipped():
    env = make_env("dmc:cheetah-run", 0)
    assert np.array_equal(env.spec.action.check(np.full(6, 3.0)), np.ones(6, np.float32))


@pytest.mark.parametrize("task, words", [
    ("cheetah-run", ["family:name", "dmc:cheetah-run", "atari:MsPacman", "gym:Pendulum-v1"]),
    ("mujoco:cheetah-run", ["family:name", "dmc:"]),
    ("dmc:cheetah-runn", ["dmc:cheetah-run", "did you mean"]),
    ("dmc:cheetah", ["unknown dm_control task"]),
    ("atari:NoSuchGame", ["atari:MsPacman"]),
    ("gym:NoSuchEnv-v0", ["gym:Pendulum-v1"]),
    ("synthetic:fetch", ["synthetic:reach"]),
])
def test_unknown_task_errors_list_families(task, words):
    with pytest.raises(UnknownTaskError) as error:
        make_env(task, 0)
    for word in words:
        assert word in str(error.value)


def test_random_episode_record_round_trips_through_codec():
    env = make_env_from_config(load_config("dmc-cup-catch+debug").env, seed=2)
    episode = run_episode(env, random_policy(env.spec.action, 2), run="t", actor=1, seed=2, index=3)
    assert episode.length == 50 and episode.info.env_steps == 200 and episode.info.task == "dmc:cup-catch"
    assert episode.info.episode_id == "t.a1.s2.e000003"
    again = decode(encode(episode), obs_shape=(64, 64, 3))
    for name in ("observations", "actions", "rewards", "terminals"):
        assert np.array_equal(getattr(again, name), getattr(episode, name))
    atari = make_env("atari:MsPacman", 0, max_env_steps=40)
    discrete = run_episode(atari, random_policy(atari.spec.action, 0), run="t")
    assert discrete.discrete and discrete.actions.dtype == np.int64 and discrete.length == 10


def test_synthetic_reach_moves_rewards_and_renders_as_documented():
    from common.envs import synthetic

    env = make_env("synthetic:reach", 3, max_env_steps=100)
    assert env.spec.action.size == 2 and env.spec.action.low == (-1.0, -1.0) and env.spec.episode_steps == 100
    frame = env.reset()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and (frame == 255).all(-1).sum() == synthetic.SQUARE ** 2
    start = env._position.copy()
    assert np.linalg.norm(start - 0.5) >= synthetic.START_DISTANCE
    step = env.step(np.array([1.0, -0.5], np.float32))
    assert np.allclose(env._position, np.clip(start + synthetic.SPEED * np.array([1.0, -0.5]), 0, 1))
    assert step.reward == pytest.approx(np.exp(-(np.linalg.norm(env._position - 0.5) / synthetic.RADIUS) ** 2))
    rows, cols = np.nonzero((step.observation == 255).all(-1))
    assert (rows.min(), cols.min()) == tuple(np.rint(env._position * (64 - synthetic.SQUARE)).astype(int))
    again = make_env("synthetic:reach", 3, max_env_steps=100)
    assert np.array_equal(again.reset(), frame)  # same seed, same start


def test_synthetic_reach_separates_a_random_policy_from_steering_to_the_centre():
    """The gap a learning test relies on: random wandering collects little, steering to the centre nearly all."""
    env = make_env("synthetic:reach", 0, max_env_steps=100)
    rng = np.random.default_rng(1)

    def episode(policy):
        env.reset()
        total = 0.0
        while True:
            step = env.step(policy())
            total += step.reward
            if step.last:
                return total

    random = [episode(lambda: env.spec.action.sample(rng)) for _ in range(40)]
    steer = [episode(lambda: np.clip((0.5 - env._position) / 0.05, -1, 1).astype(np.float32)) for _ in range(10)]
    assert np.mean(random) < 20 and np.mean(steer) > 90
