"""Where drivers register their metrics endpoints: per user, and never through a planted link.

Real files and a real MetricsServer (an HTTP server on loopback) in a private ORRERY_HOME per test.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.exporter import MetricsServer, RunCollector, orrery_home, registered_targets, targets_dir
from cluster.status import prune, statuses
from common.fileio import UnsafePathError

ROOT = Path(__file__).resolve().parents[2]
PRECIOUS = b"someone else's file: must never be overwritten\n"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "orrery-home"
    monkeypatch.setenv("ORRERY_HOME", str(home))
    return home


def server(run: str = "r1", port: int = 0) -> MetricsServer:
    return MetricsServer(RunCollector({"run": run, "task": "t", "seed": 0}, {}), run, port=port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_home_is_in_the_users_home_not_tmp(monkeypatch):
    monkeypatch.delenv("ORRERY_HOME", raising=False)
    assert orrery_home() == Path.home() / ".orrery"
    monkeypatch.setenv("HOME", "/home/alice")
    assert orrery_home() == Path("/home/alice/.orrery")
    assert targets_dir() == Path("/home/alice/.orrery/prometheus")
    monkeypatch.setenv("ORRERY_HOME", "")  # empty counts as unset, not as the current directory
    assert orrery_home() == Path("/home/alice/.orrery")
    monkeypatch.setenv("ORRERY_HOME", "/srv/orrery")
    assert orrery_home() == Path("/srv/orrery")


def test_registration_is_private_and_removed_on_stop(home):
    metrics = server()
    try:
        assert registered_targets() == {"r1": metrics.address}
        assert (home / "prometheus").stat().st_mode & 0o777 == 0o700
    finally:
        metrics.stop()
    assert registered_targets() == {}


@pytest.mark.parametrize("planted", ["r1.json", "r1.json.tmp"])
def test_a_planted_link_is_replaced_or_ignored_never_followed(home, tmp_path, planted):
    """A link at the registration's name or at the old temporary name: its target keeps its bytes."""
    victim = tmp_path / "victim"
    victim.write_bytes(PRECIOUS)
    (home / "prometheus").mkdir(parents=True, mode=0o700)
    link = home / "prometheus" / planted
    link.symlink_to(victim)
    metrics = server()
    try:
        registration = home / "prometheus" / "r1.json"
        assert not registration.is_symlink()
        assert json.loads(registration.read_text())[0]["targets"] == [metrics.address]
    finally:
        metrics.stop()
    assert victim.read_bytes() == PRECIOUS
    assert not os.path.lexists(home / "prometheus" / "r1.json")


@pytest.mark.parametrize("make_unsafe", ["symlink", "world-writable", "home-symlink"])
def test_an_unsafe_registration_directory_is_refused_and_starts_nothing(home, tmp_path, make_unsafe):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if make_unsafe == "symlink":
        home.mkdir(mode=0o700)
        (home / "prometheus").symlink_to(elsewhere)
        unsafe = home / "prometheus"
    elif make_unsafe == "world-writable":
        (home / "prometheus").mkdir(parents=True)
        os.chmod(home / "prometheus", 0o777)
        unsafe = home / "prometheus"
    else:
        home.symlink_to(elsewhere)
        unsafe = home
    port = free_port()
    with pytest.raises(UnsafePathError) as refused:
        server(port=port)
    message = str(refused.value)
    assert str(unsafe) in message and "\n" not in message
    assert list(elsewhere.iterdir()) == []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # no metrics server was left listening on it
    with pytest.raises(UnsafePathError):
        registered_targets()


@pytest.mark.timeout(60)  # a reader that opens the FIFO would block: fail fast, not at the suite timeout
def test_status_reads_only_regular_files_and_prunes_only_names(home, tmp_path):
    """`orrery status`: a link or a FIFO among the registrations is skipped; --prune unlinks dead names only."""
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps([{"targets": ["10.9.9.9:1"], "labels": {}}]))
    directory = home / "prometheus"
    directory.mkdir(parents=True, mode=0o700)
    (directory / "planted.json").symlink_to(victim)
    os.mkfifo(directory / "fifo.json")  # opening it for reading would block a plain reader forever
    dead = f"127.0.0.1:{free_port()}"
    (directory / "dead.json").write_text(json.dumps([{"targets": [dead], "labels": {"job": "orrery"}}]))
    assert registered_targets() == {"dead": dead}
    rows = statuses()
    assert [(row["run"], row["state"]) for row in rows] == [("dead", "not answering")]
    assert prune(rows) == ["dead"]
    assert not (directory / "dead.json").exists()
    assert (directory / "planted.json").is_symlink() and json.loads(victim.read_text())[0]["targets"] == ["10.9.9.9:1"]


def test_orrery_status_reports_an_unsafe_directory_in_one_line_with_exit_code_2(home):
    (home / "prometheus").mkdir(parents=True)
    os.chmod(home / "prometheus", 0o777)
    (home / "prometheus" / "kept.json").write_text("[]")
    result = subprocess.run([sys.executable, "-m", "cluster.cli", "status", "--prune"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(home / "prometheus") in result.stderr
    assert "writable by other users" in result.stderr and result.stdout == ""
    assert (home / "prometheus" / "kept.json").read_text() == "[]"
    assert (home / "prometheus").stat().st_mode & 0o777 == 0o777  # refused, not "fixed" behind the user's back
