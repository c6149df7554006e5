"""A private Ray head for end-to-end tests: `ray start --head --block` on free ports, with its own token.

The head is private to its user (its own temp dir, free ports, its own auth token) and is stopped by
ending the one `ray start --block` process that owns it: `ray stop` would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from cluster.sweeper import GROUP_PREFIX


def ray_cli() -> str:
    """The `ray` CLI of this Python's environment (a virtualenv's bin/ need not be on PATH, as under `make test`)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


RAY = ray_cli()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_temp_dir(prefix: str = "orr-") -> Path:
    """A new private directory directly under /tmp, for Ray's temp files (RAY_TMPDIR, ``--temp-dir``).

    Not under pytest's tmp_path: Ray binds Unix sockets under ``<dir>/ray/session_<date>_<pid>/sockets/``, a socket
    path holds at most 107 bytes, and with ``/tmp/pytest-of-root/pytest-106/...`` in front the dashboard's modules'
    sockets no longer fit (``ray start`` then fails with "Module MetricsHead failed to start")."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class RayHead:
    """A private ``ray start --head --block`` with ``num_cpus`` logical CPUs; a context manager.

    ``env`` is what a client of this head (the CLI, ``ray job submit``) needs in its environment.
    """

    def __init__(self, num_cpus: int, env: dict[str, str] | None = None, registered: bool = False,
                 num_gpus: int = 0):
        """``num_gpus``: GPUs the head declares (Ray schedules them; a CPU machine has none to compute on).
        Ray's temp dir for the head is a new short one under /tmp (:func:`short_temp_dir`); the head registers itself
        there as the machine's current cluster (``ray_current_cluster``). ``registered``: the temp dir is
        ``<root>/ray`` and ``env`` has RAY_TMPDIR=<root>, so that ``ray.init()`` with this env finds the head, as it
        would a ``ray start`` cluster on the machine; the whole root is removed with the head."""
        self.root = short_temp_dir("orr-head-")
        self.temp_dir = self.root / "ray" if registered else self.root
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "RAY_DEDUP_LOGS": "0",
                    **({"RAY_TMPDIR": str(self.root)} if registered else {})}
        ports = {"port": self.port, "dashboard-port": self.dashboard_port}
        for name in ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                     "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port"):
            ports[name] = free_port()
        self.args = [RAY, "start", "--head", "--block",
                     f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", f"--temp-dir={self.temp_dir}",
                     "--min-worker-port=0", "--max-worker-port=0", "--dashboard-host=127.0.0.1",
                     "--disable-usage-stats", *(f"--{name}={value}" for name, value in ports.items())]
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> RayHead:
        log = open(self.temp_dir / "head.log", "w")
        self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 120
        while True:  # until the job API answers
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.dashboard}/api/jobs/", headers=self.headers),
                                       timeout=2).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.temp_dir / "head.log").read_text()[-3000:]  # before __exit__ removes it
                    self.__exit__()
                    raise RuntimeError(f"ray start --head failed: {log_text}")
                time.sleep(1)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # `ray start --block` stops the processes of its head, workers included
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout)

    def orrery(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "cluster.cli", *args, timeout=timeout)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def jobs(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=self.headers)

    def list(self, kind: str, **filters: str) -> list[dict]:
        """Ray's state API over HTTP (``/api/v0/actors``, ``placement_groups``): rows whose columns equal ``filters``.

        HTTP with the token in a header, because ray.util.state reads the auth mode once per process.
        """
        query = urllib.parse.urlencode({"limit": 1000, "detail": "true", "filter_keys": list(filters),
                                        "filter_predicates": ["="] * len(filters),
                                        "filter_values": list(filters.values())}, doseq=True)
        request = urllib.request.Request(f"{self.dashboard}/api/v0/{kind}?{query}", headers=self.headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["data"]["result"]["result"]

    def actor_pid(self, run: str, class_name: str) -> int | None:
        """The pid of the live ``class_name`` actor inside run ``run``'s placement group."""
        groups = self.list("placement_groups", name=GROUP_PREFIX + run, state="CREATED")
        if not groups:
            return None
        actors = self.list("actors", class_name=class_name, state="ALIVE",
                           placement_group_id=groups[0]["placement_group_id"])
        return actors[0]["pid"] if actors else None

    def alive(self, class_name: str) -> int:
        return len(self.list("actors", class_name=class_name, state="ALIVE"))
