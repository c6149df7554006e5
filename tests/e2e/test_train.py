"""`orrery train` end to end on real local Ray, a real embedded Redis and real dm_control, with faults."""

import json
import os
import signal
import subprocess
import sys

import pytest

from cluster.driver import Driver
from common.config import load_config
from tests.e2e.train_support import PRESET, Once, acknowledged, kill, orrery, records, stored_ids

pytestmark = pytest.mark.slow


def test_train_end_to_end(tmp_path):
    run_dir = tmp_path / "e2e"
    result = orrery("train", "--preset", PRESET, "--actors", "2", "--budget-steps", "1000", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "results:" in result.stdout and str(run_dir) in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 1000 and summary["updates"] > 0
    assert stored_ids(run_dir) == acknowledged(run_dir) and len(acknowledged(run_dir)) == summary["episodes"]
    versions = {r["actor/policy_version"] for r in records(run_dir) if "actor/policy_version" in r}
    assert len(versions) >= 2, f"actors planned with weight versions {versions}"
    assert all("env_steps" in r for r in records(run_dir))
    returns = json.loads((run_dir / "eval" / "returns.json").read_text())
    assert len(returns["returns"]) == load_config(PRESET).train.eval_episodes
    assert (run_dir / "eval" / "open_loop.gif").read_bytes()[:6] == b"GIF89a"
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    evaluated = orrery("eval", str(run_dir), "--episodes", "1")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "return" in evaluated.stdout and "random policy" in evaluated.stdout
    assert len(json.loads((run_dir / "eval" / "returns.json").read_text())["returns"]) == 1


def test_a_killed_actor_is_restarted_and_nothing_half_written(tmp_path):
    run_dir = tmp_path / "actor-fault"
    # One actor: the run can only finish through the restarted process, whatever the timing.
    cfg = load_config(PRESET, ["cluster.actors=1", "train.budget_env_steps=2000"])
    fault = Once(lambda driver: driver.state.episodes >= 2, lambda driver: kill(driver.actors[0]))
    summary = Driver(cfg, run_dir, log=lambda line: None).run(on_tick=fault)
    assert fault.fired and summary["driver/actor_restarts"] >= 1
    assert summary["env_steps"] >= 2000
    assert stored_ids(run_dir) == acknowledged(run_dir)
    seeds = {r["seed"] for r in records(run_dir) if "seed" in r and r.get("episode", "").split(".")[1] == "a0"}
    assert len(seeds) >= 2, "the restarted actor plays with a fresh, recorded seed"


def test_a_killed_learner_resumes_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "learner-fault"
    cfg = load_config(PRESET, ["cluster.actors=1", "train.budget_env_steps=2400", "train.checkpoint_every=10"])
    fault = Once(lambda driver: (run_dir / "checkpoints" / "latest.pt").exists(), lambda driver: kill(driver.learner))
    summary = Driver(cfg, run_dir, log=lambda line: None).run(on_tick=fault)
    assert fault.fired and summary["driver/learner_restarts"] >= 1
    restored = [r["learner/restored_updates"] for r in records(run_dir) if r.get("learner/restored_updates", -1) > 0]
    assert restored, "the restarted learner loaded its checkpoint"
    assert summary["updates"] > restored[0], "the update counter continued from the checkpoint"


def test_resume_continues_the_run_and_its_replay(tmp_path):
    run_dir = tmp_path / "resumable"
    first = orrery("train", "--preset", PRESET, "--actors", "1", "--budget-steps", "600", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    before = json.loads((run_dir / "summary.json").read_text())
    again = orrery("train", "--run-dir", str(run_dir), "--preset", PRESET)
    assert again.returncode == 2 and "--resume" in again.stderr
    second = orrery("train", "--resume", str(run_dir), "--budget-steps", "1200")
    assert second.returncode == 0, second.stderr[-3000:]
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["env_steps"] >= 1200 and after["episodes"] > before["episodes"]
    assert after["updates"] > before["updates"]
    restored = [r["learner/restored_updates"] for r in records(run_dir) if r.get("learner/restored_updates", -1) >= 0]
    assert restored and restored[0] >= before["updates"]
    assert stored_ids(run_dir) == acknowledged(run_dir)


@pytest.mark.parametrize("args, words", [
    (["--preset", "dmc-cartpole-swingup+nodebug"], ["unknown preset"]),
    (["--preset", PRESET, "--set", "train.batch=3"], ["train.batch", "batch_size"]),
    (["--preset", PRESET, "--redis", "redis://:pw@127.0.0.1:1/0"], ["127.0.0.1:1"]),
    (["--preset", PRESET, "--budget-steps", "0"], ["train.budget_env_steps", "> 0"]),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    result = orrery("train", *args, "--run-dir", str(tmp_path / "bad"), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("orrery")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    assert "pw" not in result.stderr


def default_sigint() -> None:
    """SIGINT as a terminal delivers it: a suite started in the background of a script inherits it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_cleanly_with_a_final_checkpoint(tmp_path, stop):
    import time

    import torch

    run_dir = tmp_path / "interrupted"
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    process = subprocess.Popen([sys.executable, "-m", "cluster.cli", "train", "--preset", PRESET, "--actors", "1",
                                "--budget-steps", "1000000", "--run-dir", str(run_dir), "--set",
                                "train.checkpoint_every=1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, preexec_fn=default_sigint)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until the learner is training
        lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
        if any(json.loads(line).get("learner/updates", 0) >= 3 for line in lines):
            break
        time.sleep(1)
    process.send_signal(stop)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    assert "--resume" in err
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["updates"] >= 3, "the final checkpoint holds the updates made before Ctrl-C"
    port = int((run_dir / "redis" / "port").read_text())
    import socket
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the embedded Redis was stopped"
