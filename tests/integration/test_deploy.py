"""deploy/ and scripts/: both cluster YAMLs pass Ray's own cluster-config validator; the head's scripts work.

The scripts run for real: start-replay.sh and stop.sh with a real redis-server, start-monitoring.sh with the
real Prometheus (this machine has no Grafana, which the script must report), the privilege helper as root
and as an unprivileged user, the Prometheus config rendered and checked by promtool.
"""

import copy
import os
import re
import shutil
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


# ---------------------------------------------------------------- scripts, headers, the Prometheus config

START_MONITORING = ROOT / "deploy" / "head" / "start-monitoring.sh"
STOP = ROOT / "deploy" / "head" / "stop.sh"
RENDER = ROOT / "deploy" / "render-prometheus.sh"
SUCCESS = "on the head (logs in"  # the last line of start-monitoring.sh, printed only when both answer


def test_every_shell_script_parses():
    scripts = sorted([*ROOT.glob("deploy/**/*.sh"), *ROOT.glob("scripts/*.sh")])
    assert {"as-root.sh", "stop.sh", "processes.sh", "render-prometheus.sh"} <= {path.name for path in scripts}
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script


@pytest.mark.parametrize("name", YAMLS)
def test_yaml_headers_create_the_settings_folder_and_stop_the_head(name):
    header = "\n".join(line for line in (ROOT / name).read_text().splitlines() if line.startswith("#"))
    assert ("mkdir -p ~/.orrery && cp deploy/cluster.env.example ~/.orrery/cluster.env "
            "&& chmod 600 ~/.orrery/cluster.env") in header
    stop_command = "'set -a && . ~/.orrery/cluster.env && set +a && ~/orrery/deploy/head/stop.sh'"
    assert f"ray exec {name} {stop_command}" in header
    assert header.index("deploy/head/stop.sh") < header.index(f"ray down {name}")


def render(out: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([str(RENDER), str(out)], capture_output=True, text=True, timeout=30, env=environment)


@pytest.mark.parametrize("ray_tmpdir", [None, "/var/tmp/ray-elsewhere"])
def test_rendered_prometheus_config_is_valid_and_finds_rays_discovery_file(tmp_path, ray_tmpdir):
    from ray._common.utils import get_default_ray_temp_dir

    home = tmp_path / "home"
    result = render(tmp_path / "prometheus.yml", ORRERY_HOME=str(home), RAY_TMPDIR=ray_tmpdir)
    assert result.returncode == 0, result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs["orrery"]["file_sd_configs"][0]["files"] == [f"{home}/prometheus/*.json"]
    previous = os.environ.pop("RAY_TMPDIR", None)  # Ray's own rule, in the environment the script had
    try:
        if ray_tmpdir:
            os.environ["RAY_TMPDIR"] = ray_tmpdir
        ray_temp = get_default_ray_temp_dir()
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        if previous is not None:
            os.environ["RAY_TMPDIR"] = previous
    assert jobs["ray"]["file_sd_configs"][0]["files"] == [f"{ray_temp}/prom_metrics_service_discovery.json"]
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is missing: run scripts/system-deps.sh"
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_render_replaces_a_link_at_out_and_refuses_bad_paths_in_one_line(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("someone else's")
    (tmp_path / "out.yml").symlink_to(victim)
    assert render(tmp_path / "out.yml", ORRERY_HOME=str(tmp_path / "home")).returncode == 0
    assert victim.read_text() == "someone else's" and not (tmp_path / "out.yml").is_symlink()
    before = (tmp_path / "out.yml").read_text()
    for home, words in [("relative/home", "must be an absolute path"), ('/quo"te', "holds a character"),
                        ("/glob*", "holds a character")]:
        result = render(tmp_path / "out.yml", ORRERY_HOME=home)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert words in result.stderr and "ORRERY_HOME" in result.stderr
        assert (tmp_path / "out.yml").read_text() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.yml", "victim"]  # no temporary file left


# ---------------------------------------------------------------- the privilege helper

def helper(command: str, *, bin_tools: tuple[str, ...], tmp_path: Path, user: list[str] | None = None):
    """Runs ``command`` after sourcing scripts/as-root.sh, with a PATH holding only ``bin_tools`` (no sudo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in bin_tools:
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    assert shutil.which("sudo", path=str(bin_dir)) is None
    script = (ROOT / "scripts" / "as-root.sh").read_text()  # inline: the helper's file may be unreadable to `user`
    return subprocess.run([*(user or []), shutil.which("bash"), "-c", f"{script}\n{command}"], capture_output=True,
                          text=True, timeout=30, env={"PATH": str(bin_dir), "HOME": str(tmp_path)})


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the helper as root (the suite's machine does)")


@needs_root
def test_as_root_runs_commands_directly_as_root_without_sudo(tmp_path):
    made = tmp_path / "made-by-as-root"
    result = helper(f"have_root && as_root touch {made} && as_root id -u", bin_tools=("id", "touch"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert made.exists() and result.stdout.strip() == "0"


@needs_root
def test_as_root_without_root_or_sudo_fails_in_one_line_naming_the_command(tmp_path):
    nobody = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = helper("as_root echo RAN; echo exit=$?", bin_tools=(), tmp_path=tmp_path, user=nobody)
    assert "RAN" not in result.stdout and "exit=1" in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "needs root for 'echo RAN'" in result.stderr and "sudo echo RAN" in result.stderr


def test_system_deps_refuses_an_unknown_option_in_one_line():
    result = subprocess.run([str(ROOT / "scripts" / "system-deps.sh"), "--everything"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--node or --head" in result.stderr


# ---------------------------------------------------------------- monitoring and stopping the head

def ours(tmp_path: Path) -> list[int]:
    """Pids of live processes whose command line names this test's folder (what the scripts started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(tmp_path) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def monitoring(tmp_path):
    """Settings for start-monitoring.sh in this test's folder and on free ports; whatever it left running is killed."""
    env = {"ORRERY_MONITORING_DIR": str(tmp_path / "monitoring"), "ORRERY_HOME": str(tmp_path / "home"),
           "ORRERY_PROMETHEUS_PORT": str(free_port()), "ORRERY_GRAFANA_PORT": str(free_port())}
    yield env
    for pid in ours(tmp_path):
        os.kill(pid, 9)


def start_monitoring(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(START_MONITORING)], capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(shutil.which("grafana") or shutil.which("grafana-server"),
                    reason="checks the machine without Grafana (the suite's machine has only Prometheus)")
def test_start_monitoring_without_grafana_fails_naming_it_and_leaves_nothing_running(monitoring, tmp_path):
    assert shutil.which("prometheus"), "the prometheus binary is missing: run scripts/system-deps.sh"
    result = start_monitoring(monitoring)
    assert result.returncode != 0
    assert "Grafana is not installed; run deploy/head/setup.sh" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert SUCCESS not in result.stdout
    state = tmp_path / "monitoring"
    log = (state / "prometheus.log").read_text()
    assert "Server is ready to receive web requests" in log and "See you next time!" in log, log[-2000:]
    assert not (state / "prometheus.pid").exists() and ours(tmp_path) == []
    assert not listening(int(monitoring["ORRERY_PROMETHEUS_PORT"]))
    config = yaml.safe_load((state / "prometheus.yml").read_text())  # rendered from the template, not the template
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "orrery"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "home" / "prometheus" / "*.json")]
    assert state.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("listen, words", [(True, "another program listens on"),
                                           (False, "Prometheus exited before answering")])
def test_start_monitoring_fails_naming_prometheus_when_its_port_is_taken(monitoring, tmp_path, listen, words):
    """A listener is seen before Prometheus starts; a socket only bound makes Prometheus itself fail."""
    assert shutil.which("prometheus"), "the prometheus binary is missing: run scripts/system-deps.sh"
    port = int(monitoring["ORRERY_PROMETHEUS_PORT"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        if listen:
            taken.listen()
        result = start_monitoring(monitoring)
    assert result.returncode != 0 and SUCCESS not in result.stdout
    first, *log_tail = result.stderr.strip().splitlines()
    assert first.startswith("start-monitoring.sh: error: Prometheus") and words in first, result.stderr
    if not listen:
        assert any("address already in use" in line for line in log_tail), result.stderr
    assert "Grafana" not in result.stderr and ours(tmp_path) == []


def stop_head(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    settings = {"ORRERY_REPLAY_HOST": "127.0.0.1", "ORRERY_SHARED": str(tmp_path / "shared"),
                "ORRERY_MONITORING_DIR": str(tmp_path / "monitoring"), **env}
    return subprocess.run([str(STOP)], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in {**os.environ, **settings}.items() if v is not None})


def test_stop_shuts_the_replay_redis_down_cleanly_and_is_idempotent(tmp_path):
    port = free_port()
    assert start_replay(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port)).returncode == 0
    redis_dir = tmp_path / "shared" / "redis"
    pid = int((redis_dir / "redis.pid").read_text())
    # a pid file naming a live process that is not Prometheus (a reused pid) must not get it signalled
    bystander = subprocess.Popen(["sleep", "60"])
    (tmp_path / "monitoring").mkdir()
    (tmp_path / "monitoring" / "prometheus.pid").write_text(str(bystander.pid))
    try:
        redis.Redis(port=port, password=PASSWORD).set("acknowledged", "episode")
        unset = stop_head(tmp_path, ORRERY_REDIS_PASSWORD=None, ORRERY_REPLAY_PORT=str(port))
        assert unset.returncode == 2 and len(unset.stderr.strip().splitlines()) == 1
        assert "ORRERY_REDIS_PASSWORD is not set" in unset.stderr and _state(pid) != "gone"
        assert redis.Redis(port=port, password=PASSWORD).ping()  # bad input stopped nothing
        stopped = stop_head(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port))
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the replay Redis (pid {pid})" in stopped.stdout
        assert (_state(pid) == "gone" or "zombie" in _state(pid)) and not (redis_dir / "redis.pid").exists()
        assert "Redis is now ready to exit" in (redis_dir / "redis.log").read_text()
        aof = b"".join(path.read_bytes() for path in redis_dir.rglob("*.aof"))
        assert b"acknowledged" in aof, "SHUTDOWN did not leave the write in the append-only file"
        assert bystander.poll() is None and not (tmp_path / "monitoring" / "prometheus.pid").exists()
        again = stop_head(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port))
        assert again.returncode == 0, again.stderr
        assert "replay Redis not running" in again.stdout and "prometheus not running" in again.stdout
        restarted = start_replay(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port))
        assert restarted.returncode == 0, restarted.stderr
        assert redis.Redis(port=port, password=PASSWORD).get("acknowledged") == b"episode"
        assert stop_head(tmp_path, ORRERY_REDIS_PASSWORD=PASSWORD, ORRERY_REPLAY_PORT=str(port)).returncode == 0
    finally:
        bystander.kill()
        bystander.wait()
        if (redis_dir / "redis.pid").exists():
            stop(int((redis_dir / "redis.pid").read_text()))
