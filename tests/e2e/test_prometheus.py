"""A real Prometheus scrapes a real `orrery train` run: every dashboard query has data, names match the README."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from cluster.exporter import scrape
from tests.unit.test_metrics import ROOT, dashboard_queries, readme_metrics

pytestmark = pytest.mark.slow
ALL = {"$run": ".*", "$task": ".*", "$seed": ".*"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def prometheus(tmp_path):
    """deploy/prometheus.yml's orrery job, pointed at this test's registrations and scraping every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: run scripts/system-deps.sh (Debian package prometheus)")
    home = tmp_path / "orrery-home"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "orrery"]
    job["file_sd_configs"] = [{"files": [str(home / "prometheus" / "*.json")], "refresh_interval": "1s"}]
    config["scrape_configs"] = [job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, home
    process.terminate()
    process.wait(timeout=30)


def query(url: str, expr: str) -> list:
    """The series ``expr`` had at any moment of the last 15 minutes (a finished run's series are stale now)."""
    for name, value in ALL.items():
        expr = expr.replace(name, value)
    return get_json(f"{url}/api/v1/query?query={urllib.parse.quote(f'max_over_time(({expr})[15m:1s])')}")["data"]["result"]


def test_prometheus_scrapes_a_run_and_every_dashboard_query_has_data(prometheus, tmp_path):
    url, home = prometheus
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "orrery.json").read_text())
    pending = set(dashboard_queries(dashboard)) | {"orrery_run_info"}
    metrics_port = free_port()
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ORRERY_HOME=str(home))
    run_dir = tmp_path / "watched"
    train = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "train", "--preset", "dmc-cartpole-swingup+debug", "--actors", "2",
         "--budget-steps", "2400", "--run-dir", str(run_dir), "--metrics-port", str(metrics_port),
         "--set", "loss.overshooting_distance=2", "--set", "train.eval_every_env_steps=600",
         "--set", "train.eval_episodes=1",
         "--set", "cluster.dashboard=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    exported: dict[str, set[str]] = {}
    status_lines = ""
    deadline = time.monotonic() + 400
    while train.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
        try:
            samples = scrape(f"127.0.0.1:{metrics_port}")
        except OSError:
            continue  # not started yet, or already stopped
        for name, series in samples.items():
            exported.setdefault(name, set()).update(*(labels.keys() for labels, _ in series))
        if not status_lines and "orrery_learner_updates_total" in samples:
            status_lines = subprocess.run([sys.executable, "-m", "cluster.cli", "status"], capture_output=True,
                                          text=True, env=env, timeout=60).stdout
    output = train.communicate(timeout=60)[0]
    assert train.returncode == 0, output[-3000:]
    time.sleep(2)  # the last scrape
    pending = {expr for expr in pending if not query(url, expr)}
    assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in output
    assert not pending, f"dashboard queries that never returned data: {sorted(pending)}"
    documented = readme_metrics()
    assert {name: set(labels) for name, (_, labels) in documented.items()} == exported
    assert "watched" in status_lines and "dmc:cartpole-swingup" in status_lines, status_lines
    assert not (home / "prometheus" / "watched.json").exists(), "the driver left its registration behind"
    after = subprocess.run([sys.executable, "-m", "cluster.cli", "status"], capture_output=True, text=True, env=env)
    assert after.returncode == 0 and "no running orrery runs" in after.stdout
