"""The metric catalogue against the README, the Grafana dashboard and the Prometheus config; the collector."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.exporter import RunCollector
from common.metrics import BY_KEY, CATALOGUE, RUN_LABELS, lookup

ROOT = Path(__file__).resolve().parents[2]
EXPOSED = {metric.exposed_name: metric for metric in CATALOGUE}


def readme_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """exposed name -> (type, labels) from the README's metric table."""
    rows = re.findall(r"^\| `(orrery_[a-z0-9_]+)` \| (counter|gauge) \| ([a-z_, ]+) \|", (ROOT / "README.md").read_text(),
                      re.MULTILINE)
    return {name: (kind, tuple(label.strip() for label in labels.split(","))) for name, kind, labels in rows}


def dashboard_module():
    spec = importlib.util.spec_from_file_location("make_dashboard", ROOT / "deploy" / "grafana" / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_readme_documents_exactly_the_catalogue():
    documented = readme_metrics()
    assert documented == {name: (metric.kind, metric.labels) for name, metric in EXPOSED.items()}


def test_prometheus_names_follow_the_internal_keys():
    for metric in CATALOGUE:
        assert metric.name == "orrery_" + metric.key.replace("/", "_")
        assert metric.labels[:3] == RUN_LABELS
    assert lookup("learner/overshooting_kl_d7") == (BY_KEY["learner/overshooting_kl"], {"distance": "7"})
    assert lookup("learner/restored_updates") is None


def test_dashboard_is_generated_and_refers_only_to_exported_metrics():
    committed = json.loads((ROOT / "deploy" / "grafana" / "orrery.json").read_text())
    assert committed == dashboard_module().dashboard(), "regenerate: python deploy/grafana/make_dashboard.py"
    queries = dashboard_queries(committed)
    assert queries and all(panel.get("targets") for panel in committed["panels"] if panel["type"] != "row")
    for expr in queries:
        names = set(re.findall(r"\b(orrery_[a-z0-9_]+)", expr))
        assert names and names <= set(EXPOSED), f"{expr}: {names - set(EXPOSED)} not exported"
        assert 'run=~"$run"' in expr and 'seed=~"$seed"' in expr and 'task=~"$task"' in expr
    variables = {v["name"]: v for v in committed["templating"]["list"]}
    assert {"task", "seed", "run"} <= set(variables)
    rows = [panel["title"] for panel in committed["panels"] if panel["type"] == "row"]
    assert rows == ["Run", "Actors", "Learner", "Replay"]


def render_prometheus_config(out: Path) -> dict:
    """deploy/prometheus.yml as deploy/render-prometheus.sh writes it for this environment's user."""
    subprocess.run([str(ROOT / "deploy" / "render-prometheus.sh"), str(out)], check=True, timeout=30)
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("home", [None, "custom"])
def test_prometheus_config_scrapes_the_driver_registrations(monkeypatch, tmp_path, home):
    from cluster.exporter import targets_dir

    if home is None:
        monkeypatch.delenv("ORRERY_HOME", raising=False)  # the default: ~/.orrery
    else:
        monkeypatch.setenv("ORRERY_HOME", str(tmp_path / home))
    config = render_prometheus_config(tmp_path / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["orrery"]["file_sd_configs"][0]["files"] == [str(targets_dir() / "*.json")]
    assert "ray" in jobs
    assert "@" not in (tmp_path / "prometheus.yml").read_text().split("scrape_configs:")[1], "a placeholder is left"


def families(collector: RunCollector) -> dict[str, list]:
    return {family.name: family.samples for family in collector.collect()}


def test_collector_exposes_catalogued_values_with_labels():
    collector = RunCollector({"run": "r1", "task": "dmc:cartpole-swingup", "seed": 3}, {"family": "rssm", "preset": "p"})
    collector.update({"learner/image_loss": 12.5, "learner/overshooting_kl_d2": 1.5, "learner/not_exported": 1.0,
                      "learner/updates": 40, "actor/return": 99.0})  # an actor metric without an actor is ignored
    collector.update({"actor/return": 7.0, "actor/env_steps": 1000, "learner/image_loss": 1e9}, actor=1)
    found = families(collector)
    assert len(found) == len(CATALOGUE)
    run = {"run": "r1", "task": "dmc:cartpole-swingup", "seed": "3"}
    [image] = found["orrery_learner_image_loss"]
    assert image.labels == run and image.value == 12.5
    [overshooting] = found["orrery_learner_overshooting_kl"]
    assert overshooting.labels == {**run, "distance": "2"} and overshooting.value == 1.5
    [updates] = [s for s in found["orrery_learner_updates"] if s.name.endswith("_total")]
    assert updates.value == 40
    [ret] = found["orrery_actor_return"]
    assert ret.labels == {**run, "actor": "1"} and ret.value == 7.0
    [info] = found["orrery_run_info"]
    assert info.labels == {**run, "family": "rssm", "preset": "p"} and info.value == 1.0
    assert found["orrery_replay_steps"] == []


@pytest.mark.parametrize("value", ["text", None, True])
def test_collector_ignores_values_that_are_not_numbers(value):
    collector = RunCollector({"run": "r", "task": "t", "seed": 0}, {})
    collector.update({"learner/image_loss": value})
    assert families(collector)["orrery_learner_image_loss"] == []
