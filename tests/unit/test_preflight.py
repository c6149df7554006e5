"""Checks before a run starts: run directories, what --resume may change, replay URLs, settings no run can use."""

import re

import pytest

from cluster.preflight import RunDirError, check_run_dir, resume_config
from common.config import ConfigError, load_config, redacted, to_yaml

PRESET = "dmc-cartpole-swingup+debug"


def saved_run(tmp_path, overrides=()):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(redacted(load_config(PRESET, list(overrides)))))
    return run_dir


def test_a_new_run_needs_a_directory_that_holds_no_run(tmp_path):
    check_run_dir(tmp_path / "fresh", resume=False)
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(tmp_path / "file", resume=False)
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume"):
        check_run_dir(saved_run(tmp_path), resume=False)
    (tmp_path / "counted").mkdir()
    (tmp_path / "counted" / "progress.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a run"):
        check_run_dir(tmp_path / "counted", resume=False)
    (tmp_path / "sweep-run").mkdir()
    (tmp_path / "sweep-run" / "driver.log").write_text("a sweep's log, written before its driver starts")
    check_run_dir(tmp_path / "sweep-run", resume=False)


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        check_run_dir(tmp_path / "missing", resume=True)
    (tmp_path / "bare").mkdir()
    with pytest.raises(RunDirError, match="no config.yaml"):
        check_run_dir(tmp_path / "bare", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="--resume .* is a file"):
        check_run_dir(tmp_path / "file", resume=True)


@pytest.mark.parametrize("flags", [["--preset"], ["--run-dir"], ["--seed"], ["--preset", "--seed"]])
def test_resume_refuses_options_that_name_another_run(tmp_path, flags):
    with pytest.raises(ConfigError, match="drop " + ", ".join(flags)):
        resume_config(saved_run(tmp_path), [], flags)


def test_resume_may_change_how_a_run_is_run_but_not_what_it_was_made_with(tmp_path):
    run_dir = saved_run(tmp_path)
    cfg = resume_config(run_dir, ["train.budget_env_steps=9000", "cluster.actors=3", "planner.candidates=64",
                                  "train.eval_every_env_steps=500"])
    assert (cfg.train.budget_env_steps, cfg.cluster.actors, cfg.planner.candidates) == (9000, 3, 64)
    for override, key in (("env.task=dmc:cheetah-run", "env.task"), ("model.deter_size=64", "model.deter_size"),
                          ("train.chunk_length=4", "train.chunk_length"), ("loss.free_nats=1", "loss.free_nats")):
        with pytest.raises(ConfigError, match=f"cannot change {key}"):
            resume_config(run_dir, [override])
    resume_config(run_dir, ["env.task=dmc:cartpole-swingup"])  # the saved value: no change, nothing refused


def test_a_saved_config_keeps_no_password_and_resume_asks_for_the_url(tmp_path):
    run_dir = saved_run(tmp_path, ["replay.url=redis://:s3cret-pass@10.0.0.5:6390/0"])
    text = (run_dir / "config.yaml").read_text()
    assert "s3cret" not in text and "redis://:***@10.0.0.5:6390/0" in text
    with pytest.raises(ConfigError, match="keeps no password; pass its URL again with --redis"):
        resume_config(run_dir, [])
    cfg = resume_config(run_dir, ["replay.url=redis://:s3cret-pass@10.0.0.5:6390/0"])
    assert cfg.replay.url == "redis://:s3cret-pass@10.0.0.5:6390/0"
    with pytest.raises(ConfigError, match="is not the run's replay") as error:
        resume_config(run_dir, ["replay.url=redis://:other-pass@10.0.0.6:6390/0"])
    assert "pass" not in str(error.value).replace("password", "").replace("pass its", "")


def test_an_embedded_replay_is_resumed_without_redis_and_refuses_one(tmp_path):
    run_dir = saved_run(tmp_path)
    assert resume_config(run_dir, []).replay.url == ""
    with pytest.raises(ConfigError, match="embedded Redis .* drop --redis"):
        resume_config(run_dir, ["replay.url=redis://:pw@127.0.0.1:7000/0"])


def test_a_url_without_password_is_kept(tmp_path):
    run_dir = saved_run(tmp_path, ["replay.url=unix:///run/orrery/replay.sock?db=0"])
    assert resume_config(run_dir, []).replay.url == "unix:///run/orrery/replay.sock?db=0"


def test_a_damaged_config_is_one_line_naming_the_file(tmp_path):
    run_dir = saved_run(tmp_path)
    (run_dir / "config.yaml").write_text("train: {batch_size: [1, 2")
    with pytest.raises(ConfigError, match="config.yaml: config file is not valid YAML"):
        resume_config(run_dir, [])


@pytest.mark.parametrize("overrides, words", [
    (["train.chunk_length=27"], "longer than an episode (26 frames"),
    (["replay.capacity_steps=20"], "below one episode (25 agent steps)"),
    (["replay.capacity_steps=30", "train.seed_episodes=2"], "learner would never start"),
])
def test_settings_no_run_can_use_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(PRESET, overrides)
