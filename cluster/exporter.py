"""Prometheus export of a run: one endpoint per run, served by its driver, found through a file_sd directory.

Why the driver and prometheus-client rather than Ray's metrics export: every actor already
reports to the driver once per collect call, the learner once a tick, and replay counters sit
in Redis, so the driver holds the whole run's numbers in one place. One endpoint per run means
no per-worker ports to discover across nodes, counters that survive actor restarts (the
driver counts), and the same names and labels on a laptop and on a cluster. Ray's own
node metrics (CPU, GPU, object store) stay with Ray's exporter and its service-discovery file;
``deploy/prometheus.yml`` scrapes both.

Discovery: each running driver writes ``$ORRERY_HOME/prometheus/<run>.json`` (default
``ORRERY_HOME=~/.orrery``) in Prometheus' file_sd format and removes it when it stops;
``orrery status`` reads the same directory. Drivers run on the Ray head node (``ray submit``),
so Prometheus there scrapes them on loopback (``deploy/render-prometheus.sh`` writes its config
with this user's paths).

The directory is per user and checked (``common.fileio.private_dir``: 0700, ours, no symlink)
before anything is written or read there: in a folder others can write, a planted link would
redirect our writes, and a planted registration would make ``orrery status`` and Prometheus
scrape an address of someone else's choosing.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric as Family
from prometheus_client.parser import text_string_to_metric_families

from common.fileio import private_dir, write_atomic
from common.metrics import CATALOGUE, lookup

_MAX_REGISTRATION_BYTES = 64 * 1024  # ours are ~80 bytes; anything larger is not a registration


def orrery_home() -> Path:
    """This user's Orrery state on this machine: ``$ORRERY_HOME`` if set and not empty, else ``~/.orrery``.

    ``~/.orrery`` is also where cluster nodes keep cluster.env and head.env (deploy/). Never a shared
    /tmp folder: every user of the machine could write there.
    """
    return Path(os.environ.get("ORRERY_HOME") or Path.home() / ".orrery")


def targets_dir() -> Path:
    """Where running drivers register their endpoints (Prometheus file_sd_configs reads ``*.json`` here)."""
    return orrery_home() / "prometheus"


def registration_dir() -> Path:
    """:func:`targets_dir`, created if missing, after checking it and ``ORRERY_HOME`` are safe to use.

    Raises ``common.fileio.UnsafePathError`` (one line naming the path) when either is a symlink,
    not ours, or writable by others; ``orrery`` reports it with exit code 2.
    """
    private_dir(orrery_home())  # the parent too: whoever can write it could swap the directory below
    return private_dir(targets_dir())


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
        self.file = registration_dir() / f"{run}.json"  # checked first: an unsafe directory opens no port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        try:
            # write_atomic: a link planted at the file's name is replaced, never followed
            write_atomic(self.file, json.dumps([{"targets": [self.address], "labels": {"job": "orrery"}}]))
        except BaseException:
            self._close()
            raise

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def stop(self) -> None:
        self.file.unlink(missing_ok=True)  # removes the name; a link there is removed, its target left alone
        self._close()

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------- reading endpoints back

def registered_targets() -> dict[str, str]:
    """run name -> ``host:port`` of every registration file in :func:`targets_dir`.

    Raises UnsafePathError when the directory is not safe (see :func:`registration_dir`); creates
    nothing when it does not exist yet. Only regular files are read: a symlink, a FIFO or a device
    named ``*.json`` is skipped, so reading never follows a link and never blocks.
    """
    if not os.path.lexists(orrery_home()):
        return {}
    private_dir(orrery_home())  # exists, so this only checks it
    if not os.path.lexists(targets_dir()):
        return {}
    found = {}
    for path in sorted(private_dir(targets_dir()).glob("*.json")):
        try:
            found[path.stem] = json.loads(_read_regular_file(path))[0]["targets"][0]
        except (OSError, ValueError, LookupError, TypeError):
            continue  # a link, half-written or foreign file: not ours to interpret
    return found


def unregister(run: str) -> None:
    """Remove ``run``'s registration (``orrery status --prune``): the name only, in the checked directory."""
    (registration_dir() / f"{run}.json").unlink(missing_ok=True)


def _read_regular_file(path: Path) -> str:
    """The text of ``path`` if it is a regular file; OSError for a symlink (O_NOFOLLOW) or anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return handle.read(_MAX_REGISTRATION_BYTES).decode()


def scrape(address: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from ``http://address/metrics``; raises OSError when it does not answer."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples
