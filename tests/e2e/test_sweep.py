"""`orrery sweep` on a real `ray start --head`, submitted with `ray job submit`, with real Redis and dm_control; faults.

The head is private to this module (its own temp dir, free ports, its own auth token) and is
stopped by ending the one `ray start --block` process that owns it: `ray stop` would stop every
Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.e2e.ray_support import RAY, RayHead, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PRESET = "dmc-cartpole-swingup+debug"
# Short runs that still checkpoint early (every 5 updates) and run on for a while after it.
RUN = ["--preset", PRESET, "--actors-per-run", "1", "--budget-steps", "2400", "--set", "train.checkpoint_every=5"]


@pytest.fixture(scope="module")
def head():
    # ORRERY_HOME: the suite's private one (tests/conftest.py), so runs register their metrics there
    with RayHead(num_cpus=10, env={"ORRERY_HOME": os.environ.get("ORRERY_HOME", "")}) as head:
        yield head


def wait_for(condition, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_names(sweep_dir: Path) -> list[str]:
    return sorted(json.loads((sweep_dir / "sweep.json").read_text())["runs"])


def checkpointed(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "latest.pt").exists()


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def replay(tmp_path, head):
    """The cluster's replay Redis, started by the head's own script (deploy/head/start-replay.sh)."""
    port = free_port()
    env = {**os.environ, "ORRERY_REDIS_PASSWORD": secrets.token_hex(16), "ORRERY_REPLAY_HOST": "127.0.0.1",
           "ORRERY_REPLAY_PORT": str(port), "ORRERY_SHARED": str(tmp_path / "shared"),
           "ORRERY_HEAD_ENV": str(tmp_path / "head.env")}
    started = subprocess.run([str(ROOT / "deploy" / "head" / "start-replay.sh")], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    pid = int((tmp_path / "shared" / "redis" / "redis.pid").read_text())
    yield tmp_path / "head.env", redis.Redis(port=port, password=env["ORRERY_REDIS_PASSWORD"])
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(),
             30, "the replay Redis to stop")


def test_sweep_submitted_as_a_ray_job_survives_a_killed_learner_and_a_killed_run(head, replay, tmp_path):
    head_env, client = replay
    sweep_dir = tmp_path / "shared" / "runs" / "sw"
    runtime_env = json.dumps({"env_vars": {"ORRERY_HEAD_ENV": str(head_env)}})
    submitted = head.run(RAY, "job", "submit", "--address", head.dashboard, "--submission-id", "orrery-sweep-test",
                         "--no-wait", "--runtime-env-json", runtime_env, "--", sys.executable,
                         str(ROOT / "cluster" / "submit.py"), "sweep", *RUN, "--seeds", "0:3", "--max-concurrent", "3",
                         "--sweep-dir", str(sweep_dir), timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    from ray.job_submission import JobStatus

    jobs = head.jobs()
    try:
        wait_for(lambda: (sweep_dir / "sweep.json").exists(), 120, "the sweep to start")
        s0, s1, s2 = [sweep_dir / name for name in run_names(sweep_dir)]
        # A killed learner: Ray restarts it inside its run, from the run's checkpoint.
        wait_for(lambda: checkpointed(s1) and head.actor_pid(s1.name, "LearnerWorker"), 240, "s1's checkpoint")
        kill(head.actor_pid(s1.name, "LearnerWorker"))
        # A killed run (its driver process): the sweep starts it again from its checkpoint.
        wait_for(lambda: checkpointed(s2) and head.actor_pid(s2.name, "RunSupervisor"), 240, "s2's checkpoint")
        kill(head.actor_pid(s2.name, "RunSupervisor"))
        status = wait_for(lambda: (s := jobs.get_job_status("orrery-sweep-test")).is_terminal() and s, 420,
                          "the sweep job to end", every=2)
    finally:
        if not jobs.get_job_status("orrery-sweep-test").is_terminal():
            jobs.stop_job("orrery-sweep-test")
    logs = jobs.get_job_logs("orrery-sweep-test")
    assert status == JobStatus.SUCCEEDED, logs[-4000:]

    runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    assert {name: run["state"] for name, run in runs.items()} == {s0.name: "done", s1.name: "done", s2.name: "done"}
    for run_dir in (s0, s1, s2):  # three separate run directories, each a whole run
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["env_steps"] >= 2400 and summary["updates"] > 0 and "return_mean" in summary["eval"]
    assert json.loads((s1 / "summary.json").read_text())["driver/learner_restarts"] >= 1
    restored = [json.loads(line).get("learner/restored_updates", -1) for line in open(s1 / "metrics.jsonl")]
    assert max(restored) > 0, "s1's restarted learner loaded its checkpoint"
    assert runs[s2.name]["attempts"] == 2 and runs[s0.name]["attempts"] == 1
    assert json.loads((s2 / "progress.json").read_text())["session"] >= 1
    assert "resumed at" in (s2 / "driver.log").read_text()
    # Three namespaces in the one cluster Redis, each holding its run's episodes.
    namespaces = {key.decode().split(":")[1] for key in client.scan_iter("orrery:*", count=1000)}
    assert namespaces == {s0.name, s1.name, s2.name}
    assert "dmc:cartpole-swingup  3/3" in logs and "mean ± std over seeds" in logs
    assert (sweep_dir / "report.html").exists()
    wait_for(lambda: head.alive("RunSupervisor") + head.alive("LearnerWorker") == 0, 60, "the runs' processes to end")


def test_a_sweep_whose_driver_died_resumes_every_unfinished_run(head, tmp_path):
    sweep_dir = tmp_path / "sw"
    args = [sys.executable, "-m", "cluster.cli", "sweep", *RUN, "--seeds", "0:2", "--address", head.address,
            "--sweep-dir", str(sweep_dir)]
    driver = subprocess.Popen(args, env=head.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (sweep_dir / "sweep.json").exists(), 120, "the sweep to start")
        run_dirs = [sweep_dir / name for name in run_names(sweep_dir)]
        wait_for(lambda: all(map(checkpointed, run_dirs)), 240, "both runs' checkpoints")
    finally:
        driver.kill()  # SIGKILL: no clean stop, as a lost head process or an OOM kill would
        driver.communicate()
    wait_for(lambda: head.alive("RunSupervisor") == 0, 60, "Ray to end the dead driver's runs")

    resumed = head.orrery("sweep", "--resume", str(sweep_dir), "--address", head.address, timeout=420)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from its checkpoint" in resumed.stdout
    for run_dir in run_dirs:
        assert json.loads((run_dir / "progress.json").read_text())["session"] >= 1
        assert json.loads((run_dir / "summary.json").read_text())["env_steps"] >= 2400
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cwd_in(pid, sweep_dir)]
    assert not leftovers, f"processes still running in the sweep's directories: {leftovers}"
    report = head.orrery("report", str(sweep_dir))
    assert report.returncode == 0 and f"report: {sweep_dir / 'report.html'}" in report.stdout


def test_sigterm_stops_a_sweep_with_final_checkpoints(head, tmp_path):
    import torch

    sweep_dir = tmp_path / "sw"
    args = [sys.executable, "-m", "cluster.cli", "sweep", *RUN, "--budget-steps", "1000000", "--seeds", "0:1",
            "--address", head.address, "--sweep-dir", str(sweep_dir)]
    driver = subprocess.Popen(args, env=head.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (sweep_dir / "sweep.json").exists(), 120, "the sweep to start")
        [run_dir] = [sweep_dir / name for name in run_names(sweep_dir)]
        wait_for(lambda: checkpointed(run_dir), 240, "the run's first checkpoint")
        time.sleep(3)
        driver.send_signal(signal.SIGTERM)  # what `ray job stop` sends
        out, _ = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 130, out[-3000:]
    assert f"--resume {sweep_dir}" in out
    assert json.loads((sweep_dir / "sweep.json").read_text())["runs"][run_dir.name]["state"] == "stopped"
    log = (run_dir / "driver.log").read_text()
    assert "interrupted: saving the learner's final checkpoint" in log and "no final checkpoint" not in log
    assert torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["updates"] >= 5
    wait_for(lambda: head.alive("RunSupervisor") + head.alive("LearnerWorker") == 0, 60, "the run's processes to end")


def _cwd_in(pid: str, folder: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(folder)
    except OSError:
        return False


@pytest.mark.parametrize("args, words", [
    (["--seeds", "0-3"], "--seeds"),
    (["--seeds", "0:2", "--tasks", "cheetah-fly"], "unknown dm_control task"),
    (["--seeds", "0:2", "--actors-per-run", "12"], "on one node"),
    (["--seeds", "0:2", "--actors-per-run", "12", "--redis", "redis://:pw@127.0.0.1:1/0"], "whole cluster"),
])
def test_bad_input_exits_2_before_anything_launches(head, tmp_path, args, words):
    result = head.orrery("sweep", "--preset", PRESET, "--address", head.address, "--sweep-dir", str(tmp_path / "sw"),
                         *args, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("orrery")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "pw" not in result.stderr
    assert not (tmp_path / "sw").exists()
    assert not [g for g in head.list("placement_groups") if g["state"] != "REMOVED"], "nothing was launched"


def test_a_retry_stops_the_embedded_redis_a_killed_attempt_left_behind(tmp_path):
    """A supervisor killed with SIGKILL leaves its run's redis-server running; the next attempt must not share the AOF."""
    from cluster.processes import stop_orphan_redis
    from replay import EmbeddedRedis, ReplayError

    run_dir = tmp_path / "run"
    attempt = subprocess.Popen([sys.executable, "-c", "import sys, time; from replay import EmbeddedRedis; "
                                f"EmbeddedRedis({str(run_dir)!r}).start(); print('up', flush=True); time.sleep(600)"],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert attempt.stdout.readline().strip() == "up"
    attempt.kill()
    attempt.wait()
    with pytest.raises(ReplayError, match="already running"):
        EmbeddedRedis(run_dir).start()
    lines = []
    stop_orphan_redis(run_dir, log=lines.append)
    assert lines and "earlier attempt" in lines[0]
    with EmbeddedRedis(run_dir) as server:
        assert server.client().ping()
    stop_orphan_redis(run_dir, log=lines.append)  # nothing left to stop: a no-op
    assert len(lines) == 1
