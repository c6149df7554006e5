"""Faults `orrery train` promises to survive, each at several moments, on real local Ray, Redis and dm_control.

- the replay's Redis SIGKILLed (once, several times, twice in a row, during an evaluation, after the budget):
  the run finishes and the replay holds exactly the acknowledged episodes;
- the driver SIGKILLed (while seeding, while training), then `--resume` with no manual step: the run finishes,
  nothing acknowledged is lost, and no process of the run is left;
- stored episodes corrupted while the learner samples them: quarantined, counted, and training goes on.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from actors.worker import actor_seed
from cluster.driver import Driver
from cluster.processes import session_processes
from common.config import load_config
from tests.e2e.train_support import PRESET, InTurn, Once, acknowledged, orrery, processes_of, records, stored_ids

pytestmark = pytest.mark.slow


def updates(driver) -> int:
    return int(driver.learner_metrics.get("learner/updates", 0))


def kill_redis(driver) -> None:
    driver.server.kill()  # SIGKILL, as a crash would; acknowledged episodes are in the AOF


REDIS_KILLS = {
    "seeding-then-training": (1, [
        ("before the first update", lambda d: d.state.episodes >= 1 and updates(d) == 0),
        ("while training", lambda d: updates(d) >= 5),
        ("while training again", lambda d: updates(d) >= 20)]),
    # Two actors, so that a collect is still in flight when the budget is spent.
    "twice-quickly-evaluating-ending": (2, [
        ("first of two in a row", lambda d: d.state.episodes >= 2),
        ("as soon as it is back", lambda d: d.server.running),
        ("during an evaluation", lambda d: d.evaluating is not None),
        ("after the budget is spent", lambda d: d.ledger.budget_spent)]),
}


@pytest.mark.parametrize("schedule", list(REDIS_KILLS))
def test_redis_kills_at_any_moment_are_ridden_out(tmp_path, schedule):
    actors, moments = REDIS_KILLS[schedule]
    run_dir = tmp_path / "redis-fault"
    cfg = load_config(PRESET, [f"cluster.actors={actors}", "train.budget_env_steps=2400",
                               "train.eval_every_env_steps=800", "train.eval_episodes=1"])
    faults = InTurn(*[(name, when, kill_redis) for name, when in moments])
    lines = []
    summary = Driver(cfg, run_dir, log=lines.append).run(on_tick=faults)
    assert faults.fired == [name for name, _ in moments], lines
    assert summary["driver/redis_restarts"] == len(moments)
    assert summary["env_steps"] >= 2400 and summary["updates"] > 0
    assert stored_ids(run_dir) == acknowledged(run_dir), "no acknowledged episode was lost, none stored twice"
    assert len(acknowledged(run_dir)) == summary["episodes"]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def logged(run_dir, predicate) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and any(predicate(json.loads(line)) for line in path.read_text().splitlines() if line)


@pytest.mark.parametrize("moment", ["seeding", "training"])
def test_a_killed_driver_is_resumed_with_no_manual_step(tmp_path, moment):
    run_dir = tmp_path / "killed"
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    driver = subprocess.Popen([sys.executable, "-m", "cluster.cli", "train", "--preset", PRESET, "--actors", "1",
                               "--budget-steps", "1600", "--run-dir", str(run_dir), "--set", "train.checkpoint_every=5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if moment == "seeding":
            wait_until(lambda: logged(run_dir, lambda r: r.get("stored")), 240, "the first acknowledged episode")
        else:
            wait_until(lambda: (run_dir / "checkpoints" / "latest.pt").exists()
                       and logged(run_dir, lambda r: r.get("learner/updates", 0) >= 6), 240, "training")
        session = json.loads((run_dir / "driver.json").read_text())["ray_session_dir"]
        assert session and session_processes(session), "the driver's local Ray is running"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = acknowledged(run_dir)
    resumed = orrery("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "earlier attempt" in resumed.stdout, "the killed driver's Redis was recognised and stopped"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 1600 and summary["updates"] > 0
    assert session_processes(session) == [], "nothing of the killed driver's Ray is left"
    assert processes_of(run_dir) == [], "no process of the run is left"
    stored, after = stored_ids(run_dir), acknowledged(run_dir)
    assert before <= after <= stored, "nothing acknowledged was lost"
    killed_session_seed = actor_seed(0, 0, 0, 0)
    in_flight = stored - after  # written by the killed driver's actor after its last report reached the driver
    assert len(in_flight) <= 1 and all(f".s{killed_session_seed}." in id_ for id_ in in_flight), in_flight
    assert len(after) == summary["episodes"]


def test_corrupt_episodes_are_quarantined_and_training_goes_on(tmp_path):
    run_dir = tmp_path / "corrupt"
    cfg = load_config(PRESET, ["cluster.actors=1", "train.budget_env_steps=2800"])
    damaged: dict[str, str] = {}
    at = {}

    def damage(driver) -> None:
        client = driver.server.client()
        prefix = f"orrery:{run_dir.name}:"
        for kind, episode_id in zip(("garbage", "truncated", "deleted", "emptied"), driver.replay.episode_ids()):
            key = f"{prefix}e:{int(client.hget(prefix + 'ids', episode_id))}:"
            if kind == "garbage":  # same length, other bytes: only the checksum can tell
                size = client.strlen(key + "o")
                client.set(key + "o", np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
            elif kind == "truncated":
                client.set(key + "o", client.getrange(key + "o", 0, client.strlen(key + "o") // 3))
            elif kind == "deleted":
                client.delete(key + "a")
            else:
                client.set(key + "r", b"")
            damaged[episode_id] = kind
        client.close()
        at["updates"] = updates(driver)

    fault = Once(lambda d: d.state.episodes >= 6 and updates(d) >= 3, damage)
    summary = Driver(cfg, run_dir, log=lambda line: None).run(on_tick=fault)
    assert fault.fired and len(damaged) == 4
    assert summary["updates"] > at["updates"] + 20, "the learner went on training"
    corrupt = max(r.get("replay/corrupt_episodes", 0) for r in records(run_dir))
    assert corrupt == len(damaged), f"each damaged episode quarantined once ({damaged})"
    assert stored_ids(run_dir) == acknowledged(run_dir) - set(damaged), "damaged episodes are never served again"
