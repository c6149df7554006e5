"""Prometheus export of a run: one endpoint per run, served by its driver, found through a file_sd directory.

Why the driver and prometheus-client rather than Ray's metrics export: every actor already
reports to the driver once per collect call, the learner once a tick, and replay counters sit
in Redis, so the driver holds the whole run's numbers in one place. One endpoint per run means
no per-worker ports to discover across nodes, counters that survive actor restarts (the
driver counts), and the same names and labels on a laptop and on a cluster. Ray's own
node metrics (CPU, GPU, object store) stay with Ray's exporter and its service-discovery file;
``deploy/prometheus.yml`` scrapes both.

Discovery: each running driver writes ``$ORRERY_HOME/prometheus/<run>.json`` (default
``ORRERY_HOME=/tmp/orrery``) in Prometheus' file_sd format and removes it when it stops;
``orrery status`` reads the same directory. Drivers run on the Ray head node (``ray submit``),
so Prometheus there scrapes them on loopback.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric as Family
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import CATALOGUE, lookup


def orrery_home() -> Path:
    return Path(os.environ.get("ORRERY_HOME", "/tmp/orrery"))


def targets_dir() -> Path:
    """Where running drivers register their endpoints (Prometheus file_sd_configs reads ``*.json`` here)."""
    return orrery_home() / "prometheus"


class RunCollector:
    """The latest value of every catalogued metric of one run, exposed on each scrape.

    ``update`` takes the same ``component/name`` dicts the run writes to metrics.jsonl; keys
    outside the catalogue are ignored. Thread-safe: the driver updates, the HTTP thread reads.
    """

    def __init__(self, labels: Mapping[str, str], info: Mapping[str, str]):
        self.labels = {name: str(value) for name, value in labels.items()}
        self.info = {name: str(value) for name, value in info.items()}
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def update(self, values: Mapping[str, float], actor: int | None = None) -> None:
        extra = () if actor is None else (("actor", str(actor)),)
        with self._lock:
            for key, value in values.items():
                found = lookup(key)
                if found is None or isinstance(value, (str, bool)) or value is None:
                    continue
                metric, labels = found
                if ("actor" in metric.extra_labels) != (actor is not None):
                    continue
                self._values[(metric.key, extra + tuple(sorted(labels.items())))] = float(value)

    def collect(self) -> Iterable[Family]:
        with self._lock:
            values = dict(self._values)
        for metric in CATALOGUE:
            family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            family = family_type(metric.name, metric.help, labels=metric.labels)
            if metric.key == "run/info":
                family.add_metric([*self.labels.values(), *(self.info.get(k, "") for k in metric.extra_labels)], 1.0)
            for (key, extra), value in sorted(values.items()):
                if key == metric.key:
                    extra = dict(extra)
                    family.add_metric([*self.labels.values(), *(extra[k] for k in metric.extra_labels)], value)
            yield family


class MetricsServer:
    """Serves a :class:`RunCollector` at ``http://HOST:PORT/metrics`` and registers it for discovery.

    port 0 picks a free port. The registration file is removed by :meth:`stop`; one left by a
    killed driver is reported as not answering by ``orrery status`` (``--prune`` removes it).
    """

    def __init__(self, collector: RunCollector, run: str, *, host: str = "127.0.0.1", port: int = 0):
        self.collector, self.run, self.host = collector, run, host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        self.file = targets_dir() / f"{run}.json"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps([{"targets": [f"{self.address}"], "labels": {"job": "orrery"}}]))
        os.replace(tmp, self.file)

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def stop(self) -> None:
        self.file.unlink(missing_ok=True)
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------- reading endpoints back

def registered_targets() -> dict[str, str]:
    """run name -> ``host:port`` of every registration file in :func:`targets_dir`."""
    found = {}
    for path in sorted(targets_dir().glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())[0]["targets"][0]
        except (OSError, ValueError, LookupError, TypeError):
            continue  # half-written or foreign file: not ours to interpret
    return found


def scrape(address: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from ``http://address/metrics``; raises OSError when it does not answer."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples
