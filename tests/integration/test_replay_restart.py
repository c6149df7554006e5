"""A restarting, loading or busy Redis surfaces as ReplayConnectionError (retryable), and the replay recovers.

Real redis-server processes only: one killed under a running Prefetcher, one started with
``key-load-delay`` so that it answers ``-LOADING`` for a few seconds while it reloads the run's
append-only file, one running a long script (``-BUSY``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import redis

from replay import REDIS_DOWN, EmbeddedRedis, Prefetcher, ReplayConnectionError, SamplesPerInsert, SequenceReplay
from replay.errors import MESSAGE_LIMIT
from tests.integration.replay_support import SPEC, check_batch, make_episode

RUN = "restart"


def fill(replay: SequenceReplay, count: int = 6) -> dict[int, object]:
    episodes = {n: make_episode(RUN, n, 7 + n % 4) for n in range(count)}
    for episode in episodes.values():
        assert replay.add(episode)
    return episodes


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("limited", [False, True])
def test_a_killed_server_surfaces_from_the_prefetcher_as_a_connection_error(tmp_path, limited):
    server = EmbeddedRedis(tmp_path).start()
    try:
        with SequenceReplay(server.url, RUN, capacity_steps=1000, spec=SPEC, seed=0) as replay:
            episodes = fill(replay)
            time.sleep(1.2)  # appendfsync everysec: what was acknowledged is on disk
            limiter = SamplesPerInsert(1e6, 0, 0.1, counters=replay) if limited else None
            prefetcher = Prefetcher(replay, 8, 3, depth=2, workers=2, limiter=limiter, seed=0).start()
            check_batch(prefetcher.get(timeout=30), episodes.get, 3)
            server.kill()
            with pytest.raises(ReplayConnectionError, match="prefetch failed") as info:
                for _ in range(20):  # the batches already queued, then the failure
                    prefetcher.get(timeout=30)
            prefetcher.stop()
            assert isinstance(info.value, REDIS_DOWN)  # what the learner catches to wait for Redis
            assert isinstance(info.value.__cause__, REDIS_DOWN)
            assert len(str(info.value)) <= MESSAGE_LIMIT
            assert server.password not in str(info.value)

            server.start()  # the same directory: same port, password and data
            with Prefetcher(replay, 8, 3, depth=2, workers=2, limiter=limiter, seed=1) as again:
                for _ in range(5):
                    check_batch(again.get(timeout=30), episodes.get, 3)
    finally:
        server.stop()


def start_loading(server: EmbeddedRedis, delay_us: int) -> subprocess.Popen:
    """redis-server on ``server``'s directory, port and password, loading each key ``delay_us`` slower."""
    lines = ["bind 127.0.0.1", f"port {server.port}", f'requirepass "{server.password}"',
             f'dir "{server.dir.resolve()}"', "appendonly yes", 'save ""', "daemonize no",
             f"key-load-delay {delay_us}", "loading-process-events-interval-bytes 1024"]
    process = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    process.stdin.write(("\n".join(lines) + "\n").encode())
    process.stdin.close()
    return process


def loading(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.BusyLoadingError:
        return True
    except redis.ConnectionError:  # not listening yet
        return False
    return False


def test_a_server_loading_its_data_is_not_ready_then_serves(tmp_path):
    server = EmbeddedRedis(tmp_path).start()
    replay = SequenceReplay(server.url, RUN, capacity_steps=1000, spec=SPEC, seed=0)
    episodes = fill(replay)
    replay.sample(4, 3)  # the sampler is connected and has its index
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(8000):  # other data: loading takes 8000 x 1.2 ms (redis-py's own retries take ~1 s a call)
        pipe.set(f"filler:{i}", i)
    pipe.execute()
    client.bgrewriteaof()  # everything into the AOF's base (an RDB), which key-load-delay slows down
    wait_until(lambda: not int(client.info("persistence")["aof_rewrite_in_progress"])
               and not int(client.info("persistence")["aof_rewrite_scheduled"]), 30, "the AOF rewrite")
    client.close()
    server.stop()
    process = start_loading(server, 1200)
    probe = server.address.client(retry=None, socket_connect_timeout=1.0)
    try:
        wait_until(lambda: loading(probe), 10, "the server to start loading")
        calls = {"connect": lambda: SequenceReplay(server.url, RUN), "sample": lambda: replay.sample(4, 3),
                 "stats": replay.stats, "add": lambda: replay.add(make_episode(RUN, 50, 5)),
                 "counts": replay.counts}
        for name, call in calls.items():
            with pytest.raises(ReplayConnectionError, match="loading") as info:
                call()
                pytest.fail(f"{name} did not raise")
            assert isinstance(info.value, REDIS_DOWN), name
            assert len(str(info.value)) <= MESSAGE_LIMIT and server.password not in str(info.value)
        assert loading(probe), "the server finished loading during the test: raise the key count"
        wait_until(lambda: not loading(probe), 60, "the server to finish loading")
        check_batch(replay.sample(16, 3), episodes.get, 3)  # the same instance recovers by itself
        assert replay.stats()["replay/episodes"] == len(episodes)
    finally:
        probe.close()
        replay.close()
        process.terminate()
        process.wait(10)


def test_a_busy_server_is_not_ready_then_serves(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        replay = SequenceReplay(server.url, RUN, capacity_steps=1000, spec=SPEC, seed=0)
        episodes = fill(replay)
        replay.sample(4, 3)
        admin = server.client()
        admin.config_set("busy-reply-threshold", 50)  # ms a script may run before others get -BUSY
        spin = ("local t = redis.call('TIME') local stop = t[1] * 1e6 + t[2] + 2.5e6 "
                "while true do local n = redis.call('TIME') if n[1] * 1e6 + n[2] > stop then break end end return 1")
        busy = threading.Thread(target=lambda: server.client().eval(spin, 0), daemon=True)
        busy.start()
        probe = server.address.client(retry=None)

        def is_busy() -> bool:
            try:
                probe.get("nothing")
            except redis.ResponseError as error:
                return str(error).startswith("BUSY")
            return False

        try:
            wait_until(is_busy, 10, "the script to make the server busy")
            for call in (lambda: replay.sample(4, 3), replay.stats):
                with pytest.raises(ReplayConnectionError, match="not ready") as info:
                    call()
                assert isinstance(info.value, REDIS_DOWN)
            busy.join(30)
            check_batch(replay.sample(16, 3), episodes.get, 3)
        finally:
            probe.close()
            admin.close()
            replay.close()
