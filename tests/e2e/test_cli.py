"""The `orrery` command line as a user runs it: a real subprocess, real environments."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import from_yaml, load_config, preset_names
from common.episode import decode


def orrery(*args, cwd=None):
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=240)


def test_presets_lists_every_preset_with_settings():
    result = orrery("presets")
    assert result.returncode == 0, result.stderr
    for name in preset_names():
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert f"task={load_config(name).env.task}" in line and "repeat=" in line


def test_env_check_prints_shapes_and_frames_per_second(tmp_path):
    result = orrery("env-check", "dmc:cheetah-run", "--steps", "20", "--save-frame", str(tmp_path / "f.png"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(64, 64, 3) uint8" in out and "continuous, shape (6,)" in out and "action repeat 4" in out
    fps = float(out.split("speed")[1].split("frames/s")[0])
    assert fps > 0
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_env_check_atari_reports_discrete_actions():
    result = orrery("env-check", "atari:MsPacman", "--steps", "10")
    assert result.returncode == 0, result.stderr
    assert "discrete, 9 actions" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["env-check", "nosuch:task"], ["unknown task", "dmc:cheetah-run"]),
    (["env-check", "dmc:cheetah-runn"], ["did you mean 'dmc:cheetah-run'"]),
    (["env-check", "dmc:cheetah-run", "--steps", "0"], ["--steps", ">= 1"]),
    (["rollout", "--preset", "dmc-cheetah-run+nodebug"], ["unknown preset", "debug"]),
    (["rollout", "--set", "train.batch=3"], ["train.batch", "batch_size"]),
    (["rollout", "--set", "train.batch_size=x"], ["train.batch_size", "integer"]),
    (["frobnicate"], ["invalid choice"]),
    ([], ["required"]),
])
def test_bad_arguments_exit_2_with_one_line(args, words):
    result = orrery(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_rollout_writes_config_episodes_and_preview(tmp_path):
    run_dir = tmp_path / "demo"
    result = orrery("rollout", "--preset", "dmc-cartpole-swingup+debug", "--episodes", "2", "--seed", "4",
                    "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "mean return" in result.stdout and "env steps/s" in result.stdout and str(run_dir) in result.stdout
    cfg = from_yaml((run_dir / "config.yaml").read_text())
    assert cfg == load_config("dmc-cartpole-swingup+debug", ["train.seed=4"])
    files = sorted((run_dir / "episodes").glob("*.ep"))
    assert len(files) == 2
    episodes = [decode(f.read_bytes(), obs_shape=(64, 64, 3)) for f in files]
    assert [e.length for e in episodes] == [25, 25] and {e.info.seed for e in episodes} == {4}
    assert len({e.info.episode_id for e in episodes}) == 2
    assert not (episodes[0].actions == episodes[1].actions).all(), "each episode draws its own random actions"
    assert Path(run_dir / "episode-0.png").read_bytes()[:4] == b"\x89PNG"
