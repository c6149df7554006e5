"""Bad input to `orrery train` / `eval` / `sweep`: exit code 2, one line naming the problem, nothing created or changed.

Every case runs the real CLI against a real finished run (or none) and compares the run directory, byte for
byte and mode for mode, before and after.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.e2e.train_support import PRESET, orrery, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = orrery("train", "--preset", PRESET, "--actors", "1", "--budget-steps", "400", "--run-dir", str(run_dir),
                    "--set", "train.checkpoint_every=5")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run that a case may damage."""
    copy = tmp_path / finished.name
    shutil.copytree(finished, copy, symlinks=True)
    return copy


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def damage(run_dir: Path, what: str) -> None:
    checkpoints = run_dir / "checkpoints"
    if what == "progress":
        (run_dir / "progress.json").write_text('{"env_steps": "lots"')
    elif what == "checkpoints":
        latest = (checkpoints / "latest.pt").read_bytes()
        (checkpoints / "latest.pt").write_bytes(latest[: len(latest) // 2])
        (checkpoints / "previous.pt").write_bytes(os.urandom(4096))
    elif what == "malicious":
        for name in ("latest.pt", "previous.pt"):
            torch.save({"model": {}, "x": Exploit(run_dir / "pwned")}, checkpoints / name)
    elif what == "foreign":  # a readable checkpoint of another model (someone copied one in)
        state = torch.load(checkpoints / "latest.pt", weights_only=True)
        state["model"] = {name: torch.zeros(3) for name in state["model"]}
        for name in ("latest.pt", "previous.pt"):
            torch.save(state, checkpoints / name)
    elif what == "cluster-redis":  # a run made on a cluster Redis: config.yaml keeps its URL without password
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["replay"]["url"] = "redis://:***@10.0.0.5:6390/0"
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


RESUME_CASES = {
    "another task": ([], ["--set", "env.task=dmc:cheetah-run"], ["cannot change env.task"]),
    "another model": ([], ["--set", "model.deter_size=64"], ["cannot change model.deter_size"]),
    "a preset": ([], ["--preset", PRESET], ["drop --preset"]),
    "a run dir": ([], ["--run-dir", "/tmp/elsewhere"], ["drop --run-dir"]),
    "a seed": ([], ["--seed", "3"], ["drop --seed"]),
    "a redis for an embedded run": ([], ["--redis", "redis://:hunter2@127.0.0.1:1/0"], ["embedded", "drop --redis"]),
    "no redis for a cluster run": (["cluster-redis"], [], ["keeps no password", "--redis"]),
    "damaged progress": (["progress"], [], ["progress.json is damaged"]),
    "damaged checkpoints": (["checkpoints"], [], ["latest.pt", "previous.pt", "no usable checkpoint"]),
    "a malicious checkpoint": (["malicious"], [], ["unpickle objects", "no code ran"]),
    "a checkpoint of another model": (["foreign"], [], ["does not fit this run's model"]),
}


def one_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("orrery")]
    assert result.returncode == 2 and len(lines) == 1, result.stdout[-1500:] + result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_a_resume_that_cannot_be_honoured_changes_nothing(run, case):
    damages, args, words = RESUME_CASES[case]
    for what in damages:
        damage(run, what)
    before = snapshot(run)
    line = one_line(orrery("train", "--resume", str(run), *args, timeout=240))
    for word in words:
        assert word in line
    assert "hunter2" not in line and len(line) < 700
    assert snapshot(run) == before, "nothing in the run directory was created or changed"
    assert not (run / "pwned").exists()


def test_a_second_train_into_a_run_changes_nothing(run):
    before = snapshot(run)
    line = one_line(orrery("train", "--preset", "dmc-cheetah-run+debug", "--run-dir", str(run), timeout=240))
    assert f"--resume {run}" in line
    assert snapshot(run) == before


def test_eval_of_damaged_checkpoints_is_one_line(run):
    damage(run, "checkpoints")
    before = snapshot(run)
    line = one_line(orrery("eval", str(run), "--episodes", "1", timeout=240))
    assert "no usable checkpoint" in line
    assert snapshot(run) == before


@pytest.mark.parametrize("device, words", [
    ("tpu", ["--device 'tpu'", "choose auto, cpu, cuda or cuda:N"]),
    ("cuda:7", ["cuda:7"]),
])
def test_eval_on_a_device_that_cannot_be_used_is_one_line(run, device, words):
    """`orrery eval --device`: no such device, or a GPU this torch cannot use (CI: a CPU build), before any episode."""
    before = snapshot(run)
    line = one_line(orrery("eval", str(run), "--episodes", "1", "--device", device, timeout=240))
    assert all(word in line for word in words), line
    if device.startswith("cuda") and not torch.cuda.is_available():
        assert "--device cpu" in line, line
    assert snapshot(run) == before


def test_resume_of_a_run_another_driver_holds_is_refused(run):
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)",
                               str(run / "driver.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        line = one_line(orrery("train", "--resume", str(run), timeout=240))
        assert "being driven by another orrery process" in line
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    with open(run / "driver.lock") as lock:  # released with its holder, however it ended
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("args, words", [
    (["--set", "train.chunk_length=27"], ["train.chunk_length", "longer than an episode"]),
    (["--set", "replay.capacity_steps=10"], ["replay.capacity_steps", "below one episode"]),
])
def test_settings_no_run_can_use_create_nothing(tmp_path, args, words):
    line = one_line(orrery("train", "--preset", PRESET, "--run-dir", str(tmp_path / "new"), *args, timeout=240))
    for word in words:
        assert word in line
    assert not (tmp_path / "new").exists()


def test_a_run_dir_that_is_a_file_changes_nothing(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_line(orrery("train", "--preset", PRESET, "--run-dir", str(target), timeout=240))
    assert "is a file" in line and target.read_text() == "mine"


def test_a_damaged_sweep_state_is_one_line(tmp_path):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text('{"spec": {"preset": 3}, "runs": [')
    before = snapshot(tmp_path / "sw")
    line = one_line(orrery("sweep", "--resume", str(tmp_path / "sw"), timeout=240))
    assert "sweep.json is damaged" in line
    assert snapshot(tmp_path / "sw") == before


def test_an_unsafe_orrery_home_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "real")
    line = one_line(orrery("train", "--preset", PRESET, "--run-dir", str(tmp_path / "new"), timeout=240,
                           env={"ORRERY_HOME": str(tmp_path / "home")}))
    assert "is a symlink" in line and str(tmp_path / "home") in line
    assert not (tmp_path / "new").exists() and list((tmp_path / "real").iterdir()) == []
