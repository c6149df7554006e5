"""deploy/: both cluster YAMLs pass Ray's own cluster-config validator; the head's replay Redis script works."""

import copy
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import redis
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
YAMLS = ["deploy/cluster.yaml", "deploy/cluster-local.yaml"]
START_REPLAY = ROOT / "deploy" / "head" / "start-replay.sh"
PASSWORD = "test-password-0123456789"


def launcher_config(name: str) -> dict:
    """The YAML as `ray up` prepares it (defaults of its provider filled in), before any cloud call."""
    return prepare_config(copy.deepcopy(yaml.safe_load((ROOT / name).read_text())))


@pytest.mark.parametrize("name", YAMLS)
def test_cluster_yaml_passes_rays_validator(name):
    config = launcher_config(name)
    validate_config(config)  # ray.autoscaler's JSON schema, what `ray up` checks
    commands = [c for key in ("setup_commands", "head_setup_commands", "head_start_ray_commands") for c in config[key]]
    scripts = {path for command in commands for path in re.findall(r"~/orrery/(deploy/\S+\.sh)", command)}
    assert {"deploy/node-setup.sh", "deploy/head/setup.sh", "deploy/head/start-replay.sh",
            "deploy/head/start-monitoring.sh"} <= scripts
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0, script
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start, "job submission is code execution: keep it off the network"
    assert config["file_mounts"]["~/orrery"] == "."


def test_aws_cluster_has_a_cpu_head_with_driver_slots_and_gpu_and_actor_workers():
    config = launcher_config("deploy/cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0 and head["CPU"] == 0 and head["orrery_driver"] > 0
    assert any(t["resources"].get("GPU", 0) > 0 and t["max_workers"] > 0 for t in types.values())
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"].get("CPU", 0) > 0 for t in types.values())
    assert all(t.get("min_workers", 0) <= t["max_workers"] <= config["max_workers"] for t in types.values())


@pytest.mark.parametrize("name", YAMLS)
def test_the_validator_is_real(name):
    broken = yaml.safe_load((ROOT / name).read_text())
    broken["head_start_ray_commands"].append({"not": "a command"})
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


# ---------------------------------------------------------------- the head's replay Redis

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_replay(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    settings = {"ORRERY_REPLAY_HOST": "127.0.0.1", "ORRERY_SHARED": str(tmp_path / "shared"),
                "ORRERY_HEAD_ENV": str(tmp_path / "head.env"), **env}
    return subprocess.run([str(START_REPLAY)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in {**os.environ, **settings}.items() if v is not None})


def test_start_replay_runs_a_password_protected_append_only_redis(tmp_path):
    port = free_port()
    result = start_replay(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port))
    assert result.returncode == 0, result.stderr
    pid = int((tmp_path / "shared" / "redis" / "redis.pid").read_text())
    try:
        client = redis.Redis(port=port, password=PASSWORD)
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str(tmp_path / "shared" / "redis")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert PASSWORD not in Path(f"/proc/{pid}/cmdline").read_text()
        head_env = tmp_path / "head.env"
        assert head_env.stat().st_mode & 0o777 == 0o600
        assert f"ORRERY_REPLAY_URL=redis://:{PASSWORD}@127.0.0.1:{port}/0" in head_env.read_text()
        again = start_replay(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port))
        assert again.returncode == 0 and "already running" in again.stdout
        wrong = start_replay(tmp_path, ORRERY_REDIS_PASSWORD="another-password-0123", ORRERY_REPLAY_PORT=str(port))
        assert wrong.returncode == 2 and "something else answers" in wrong.stderr
    finally:
        stop(pid)


def stop(pid: int) -> None:
    """SIGTERM the server this test started and wait until it is gone."""
    os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


@pytest.mark.parametrize("env, words", [
    ({"ORRERY_REDIS_PASSWORD": None}, "ORRERY_REDIS_PASSWORD is not set"),
    ({"ORRERY_REDIS_PASSWORD": "change-me"}, "example's"),
    ({"ORRERY_REDIS_PASSWORD": "short"}, "shorter than 16"),
    ({"ORRERY_REDIS_PASSWORD": "pass word with spaces!!"}, "only letters"),
    ({"ORRERY_REDIS_PASSWORD": PASSWORD, "ORRERY_REPLAY_PORT": "6379"}, "Ray's"),
])
def test_start_replay_bad_input_exits_2_with_one_line(tmp_path, env, words):
    result = start_replay(tmp_path, **{"ORRERY_REPLAY_PORT": str(free_port()), **env})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert not (tmp_path / "shared" / "redis" / "redis.pid").exists()
