"""The embedded redis-server and connections: safety settings, clear errors, durability across kill -9."""

from __future__ import annotations

import os
import socket
import stat
import time

import numpy as np
import pytest

from replay import (
    EmbeddedRedis, ReplayAuthError, ReplayConnectionError, ReplayError, SequenceReplay, ServerNotFoundError, connect,
)
from replay.server import RAY_REDIS_PORT, Address, redact
from replay.wire import RespConnection
from tests.integration.replay_support import SPEC, check_batch, make_episode


def test_embedded_server_is_private_and_persistent(redis_server):
    directory = redis_server.dir
    assert stat.S_IMODE(os.stat(directory / "password").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert redis_server.port != RAY_REDIS_PORT
    client = redis_server.client()
    config = {key: value for item in ("bind", "protected-mode", "appendonly", "appendfsync", "save", "dir")
              for key, value in client.config_get(item).items()}
    assert config["bind"] == "127.0.0.1" and config["protected-mode"] == "yes"
    assert (config["appendonly"], config["appendfsync"], config["save"]) == ("yes", "everysec", "")
    assert config["dir"] == str(directory.resolve())
    password = (directory / "password").read_text().strip()
    assert len(password) >= 40 and redis_server.url == f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
    assert redact(redis_server.url) == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    with open(f"/proc/{redis_server.pid}/cmdline", "rb") as cmdline:
        assert password.encode() not in cmdline.read()  # the config came through stdin
    client.close()


def test_restart_reuses_password_port_and_data(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        first_url = server.url
        with SequenceReplay(server.url, "restart", capacity_steps=100, spec=SPEC) as replay:
            replay.add(make_episode("restart", 0, 3))
    with EmbeddedRedis(tmp_path) as server:  # a clean stop flushed the AOF
        assert server.url == first_url
        with SequenceReplay(server.url, "restart") as replay:
            assert replay.episode_ids() == ["restart.ep00000"]


def test_missing_binary_says_how_to_install(tmp_path):
    with pytest.raises(ServerNotFoundError, match="redis-server not found.*apt-get install redis-server"):
        EmbeddedRedis(tmp_path, binary="redis-server-that-is-not-installed").start()


def test_wrong_or_missing_password_is_named_not_shown(redis_server):
    wrong = Address(port=redis_server.port, password="not-the-password-xyz")
    with pytest.raises(ReplayAuthError, match=r"rejected the password .*RUN_DIR/redis/password") as info:
        connect(wrong)
    assert "not-the-password-xyz" not in str(info.value) and redis_server.password not in str(info.value)
    with pytest.raises(ReplayAuthError, match="rejected the password"):
        SequenceReplay(wrong.url, "any")
    with pytest.raises(ReplayAuthError, match="rejected the password"):
        RespConnection(wrong).call("PING")
    with pytest.raises(ReplayAuthError, match=r"requires a password.*redis://:PASSWORD@"):
        connect(f"redis://127.0.0.1:{redis_server.port}/0")


def test_unreachable_server_says_what_to_do():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    url = f"redis://:secret-pw-123@127.0.0.1:{port}/0"
    for attempt in (lambda: connect(url), lambda: SequenceReplay(url, "any"),
                    lambda: RespConnection(Address.from_url(url)).call("PING")):
        with pytest.raises(ReplayConnectionError, match=rf"cannot reach Redis at 127.0.0.1:{port}: .*is it running\? "
                                                        r"for a local run leave replay.url empty") as info:
            attempt()
        assert "secret-pw-123" not in str(info.value)


def test_url_forms():
    unix = Address.from_url("unix://:pw@/tmp/r.sock?db=2")
    assert (unix.path, unix.password, unix.db, unix.where) == ("/tmp/r.sock", "pw", 2, "unix socket /tmp/r.sock")
    assert Address.from_url("redis://u:p%40ss@10.0.0.5:7000/1").url == "redis://u:p%40ss@10.0.0.5:7000/1"
    with pytest.raises(Exception, match="unknown scheme 'http'"):
        Address.from_url("http://:pw@host:1/0")
    assert "pw" not in repr(Address(password="pw"))


def test_kill_9_loses_no_acknowledged_episode(tmp_path):
    """Acknowledged writes older than the fsync window survive SIGKILL; sampling resumes after restart."""
    run = "durable"
    episodes = {n: make_episode(run, n, 6 + n % 5) for n in range(12)}
    server = EmbeddedRedis(tmp_path).start()
    replay = SequenceReplay(server.url, run, capacity_steps=1000, spec=SPEC)
    for episode in episodes.values():
        assert replay.add(episode)
    replay.sample(4, 3)
    time.sleep(1.5)  # appendfsync everysec: acknowledged writes older than ~1 s are on disk
    pid = server.pid
    server.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    restarted = EmbeddedRedis(tmp_path).start()
    try:
        with SequenceReplay(restarted.url, run) as fresh:
            assert fresh.episode_ids() == [e.info.episode_id for e in episodes.values()]
            for episode in episodes.values():
                back = fresh.get_episode(episode.info.episode_id)
                for name in ("observations", "actions", "rewards", "terminals"):
                    np.testing.assert_array_equal(getattr(back, name), getattr(episode, name))
            stats = fresh.stats()
            assert (stats["replay/episodes"], stats["replay/inserts"]) == (12, 12)
            check_batch(fresh.sample(32, 4), episodes.get, 4)
            assert fresh.add(episodes[3]) is False  # still idempotent after the crash
        # the old instance reconnects by itself (same port): sampling resumes
        check_batch(replay.sample(8, 5), episodes.get, 5)
        replay.close()
    finally:
        restarted.stop()


def test_one_server_per_directory_and_failed_starts_show_the_log(redis_server, tmp_path):
    with pytest.raises(ReplayError, match=rf"already running \(pid {redis_server.pid}, port {redis_server.port}\)"):
        EmbeddedRedis(redis_server.dir.parent).start()
    with pytest.raises(ReplayError, match="exited with code 1 while starting; no log at"):
        EmbeddedRedis(tmp_path, binary="false").start()


@pytest.mark.parametrize("window", [1, 3, 6, 50])
def test_a_windowed_pipeline_answers_like_one_write(redis_server, window):
    """Commands sent in groups ahead of the reader: the same replies, sinks and callback order as all at once."""
    connection = RespConnection(redis_server.address)
    big = bytes(range(256)) * 1024  # 256 KiB: read straight into its sink
    connection.call("SET", "windowed:big", big)
    commands = [("SET", f"windowed:{i}", i) if i % 3 else ("GETRANGE", "windowed:big", 0, len(big) - 1)
                for i in range(20)] + [("GET", "windowed:missing"), ("INCR", "windowed:big")]

    def run(window: int):
        sinks = [memoryview(bytearray(len(big))) if command[0] == "GETRANGE" else None for command in commands]
        order = []
        callbacks = [lambda reply, i=i: order.append(i) for i in range(len(commands))]
        replies = connection.pipeline(commands, sinks, callbacks, window=window)
        return [str(r) if isinstance(r, Exception) else r for r in replies], order, \
            [bytes(s) for s in sinks if s is not None]

    one_write = run(0)
    assert run(window) == one_write
    assert one_write[1] == list(range(len(commands))) and all(part == big for part in one_write[2])
    connection.close()
