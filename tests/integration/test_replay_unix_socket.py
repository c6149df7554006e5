"""The embedded Redis's Unix socket: what actors write over TCP the learner reads over the socket, also after a crash.

A real redis-server started the way a run starts it (cluster/processes.py RunProcesses.start_replay),
killed with SIGKILL and brought back by the driver's restart path (RunProcesses.keep_replay_up).
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.processes import RunProcesses
from common.config import load_config
from common.urls import redact
from replay import ReplayAuthError, SequenceReplay
from replay import server as server_module
from replay.reconnect import open_replay
from tests.integration.replay_support import SPEC, check_batch, make_episode

RUN = "unix-socket"
CFG = load_config("dmc-cartpole-swingup+debug")  # replay.url empty: an embedded Redis


def assert_private(path: Path) -> None:
    """A socket of this user's, mode 0700, in a directory of this user's, mode 0700 (no link on the way)."""
    info, parent = os.lstat(path), os.lstat(path.parent)
    assert stat.S_ISSOCK(info.st_mode), f"{path} is not a socket"
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid(), oct(info.st_mode)
    assert stat.S_ISDIR(parent.st_mode) and stat.S_IMODE(parent.st_mode) == 0o700, oct(parent.st_mode)
    assert parent.st_uid == os.getuid()


def same_episode(a, b) -> None:
    for name in ("observations", "actions", "rewards", "terminals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_written_over_tcp_read_over_the_socket_and_again_after_a_crash(tmp_path):
    logs: list[str] = []
    run_dir = tmp_path / "run"
    with RunProcesses(run_dir, log=logs.append) as processes:
        processes.claim()
        assert processes.local_url is None  # nothing started yet
        url = processes.start_replay(CFG)
        local = processes.local_url
        redis_dir = run_dir / "redis"
        socket_path = redis_dir / "redis.sock"
        password = (redis_dir / "password").read_text().strip()
        assert url.startswith("redis://") and "127.0.0.1" in url
        assert local == f"unix://{socket_path.resolve()}?db=0&password={password}"
        assert redact(local) == f"unix://{socket_path.resolve()}?db=0&password=***"
        assert_private(socket_path)
        assert stat.S_IMODE(os.stat(redis_dir / "password").st_mode) == 0o600

        episodes = {n: make_episode(RUN, n, 12 + n % 5) for n in range(8)}
        with SequenceReplay(url, RUN, capacity_steps=10_000, spec=SPEC, seed=0) as writer:  # an actor: TCP
            for episode in episodes.values():
                assert writer.add(episode)
        learner = open_replay(local, RUN, wait_s=5, seed=1)  # the learner: the socket
        assert learner._address.path == str(socket_path.resolve())
        assert learner._connection().address.path == str(socket_path.resolve())  # the sampler's own connection too
        check_batch(learner.sample(16, 6), episodes.get, 6)
        for n in (0, 5):
            same_episode(learner.get_episode(f"{RUN}.ep{n:05d}"), episodes[n])
        assert learner.stats()["replay/episodes"] == 8
        with pytest.raises(ReplayAuthError) as refused:  # the socket asks for the same password
            SequenceReplay(local.replace(password, "wrong-" + password[:4]), RUN)
        assert password not in str(refused.value) and password[:4] not in str(refused.value)

        time.sleep(1.2)  # appendfsync everysec: what was acknowledged is on disk
        processes.redis.kill()  # a crash: SIGKILL leaves its socket file behind
        assert processes.keep_replay_up()  # the driver's tick: restarted on its AOF
        assert processes.redis.running
        assert processes.local_url == local, "the same URL after the restart"
        assert_private(socket_path)
        check_batch(learner.sample(16, 6), episodes.get, 6)  # the old client reconnects over the socket
        with open_replay(processes.local_url, RUN, wait_s=10) as again:
            assert again.episode_ids() == [f"{RUN}.ep{n:05d}" for n in range(8)]
            same_episode(again.get_episode(f"{RUN}.ep00007"), episodes[7])
        learner.close()
    assert not os.path.lexists(socket_path), "a clean stop removes the socket"
    assert any("restarting" in line for line in logs)
    assert not any(password in line for line in logs)


def test_a_run_dir_too_long_for_a_socket_gets_a_short_private_one(tmp_path, monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="o-", dir="/tmp"))  # a short $TMPDIR of this test's own
    monkeypatch.setattr(server_module.tempfile, "gettempdir", lambda: str(base))
    try:
        run_dir = tmp_path / ("r" * 110)
        with RunProcesses(run_dir, log=lambda line: None) as processes:
            processes.claim()
            url = processes.start_replay(CFG)
            socket_path = processes.redis.socket_path
            assert socket_path.parent == base / f"orrery-redis-{os.getuid()}"
            assert len(os.fsencode(socket_path)) <= server_module.MAX_SOCKET_PATH
            assert_private(socket_path)
            with SequenceReplay(url, RUN, capacity_steps=1000, spec=SPEC) as writer:
                assert writer.add(make_episode(RUN, 1, 9))
            with SequenceReplay(processes.local_url, RUN, seed=0) as learner:
                assert learner._address.path == str(socket_path)
                check_batch(learner.sample(4, 5), lambda n: make_episode(RUN, n, 9), 5)
            first = processes.local_url
            processes.redis.kill()
            assert processes.keep_replay_up() and processes.local_url == first  # the same path, from the run dir
        assert not os.path.lexists(socket_path)
    finally:
        for leftover in sorted(base.rglob("*"), reverse=True):
            leftover.rmdir() if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        base.rmdir()


def test_a_fallback_dir_that_is_not_ours_is_not_used(tmp_path, monkeypatch):
    """A link planted where the short directory goes is refused; with no usable place the server is TCP only."""
    base = Path(tempfile.mkdtemp(prefix="o-", dir="/tmp"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (base / f"orrery-redis-{os.getuid()}").symlink_to(elsewhere)
    monkeypatch.setattr(server_module.tempfile, "gettempdir", lambda: str(base))
    try:
        logs: list[str] = []
        with RunProcesses(tmp_path / ("r" * 110), log=logs.append) as processes:
            processes.claim()
            processes.start_replay(CFG)
            socket_path = processes.redis.socket_path
            assert socket_path is None or socket_path.parent == Path("/tmp") / f"orrery-redis-{os.getuid()}"
            assert not list(elsewhere.iterdir()), "nothing was bound through the link"
        monkeypatch.setattr(server_module, "MAX_SOCKET_PATH", 8)  # no path fits: TCP only
        with RunProcesses(tmp_path / "short", log=logs.append) as processes:
            processes.claim()
            url = processes.start_replay(CFG)
            assert processes.redis.socket_path is None and processes.redis.unix_url is None
            assert processes.local_url == url  # the learner still reads on this node, over loopback TCP
            assert any("TCP only" in line for line in logs)
            password = processes.redis.password
        assert not any(password in line for line in logs)
    finally:
        (base / f"orrery-redis-{os.getuid()}").unlink()
        base.rmdir()
