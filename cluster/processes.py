"""What a run's driver starts outside its own process, and stopping all of it again, whatever happens.

    with RunProcesses(run_dir, log=print) as processes:
        processes.start_ray(cfg, cpus=actors + 1)   # a local Ray of its own, or the cluster of cfg.cluster.address
        processes.claim()                           # RUN_DIR/driver.lock: one driver per run; a killed one's leftovers go
        url = processes.start_replay(cfg)           # the embedded redis-server in RUN_DIR/redis (or cfg.replay.url)
        processes.local_url                         # its Unix socket's URL, for the learner (None with replay.url)
        processes.commit()                          # the run's files are written: keep RUN_DIR whatever comes
        ...
        processes.keep_replay_up()                  # each tick: an embedded Redis that stopped is restarted on its AOF
    # leaving the block stops what was started here (Ray only if this driver started it), in reverse order

Why a lock and a record: a driver killed with SIGKILL leaves its embedded redis-server running and, of a
local Ray, the dashboard and runtime-env agents (the other Ray processes share its fate). The next
driver of the run takes ``driver.lock`` (an flock, so the kernel releases it when its holder dies, however
it died); holding it proves the earlier driver is gone, so what its ``driver.json`` says it started on this
host is an orphan: its Redis is shut down (SHUTDOWN writes the append-only file first, so nothing
acknowledged is lost) and its Ray session's leftover processes are stopped. A second driver started
while the first still runs is refused instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import ray

from common.config import Config, ConfigError
from common.fileio import write_atomic

LOCK = "driver.lock"
RECORD = "driver.json"


class RunBusyError(ConfigError):
    """Another live driver holds the run."""


class RunProcesses:
    """The Ray runtime, the embedded Redis and the run directory's claim of one driver session; a context manager."""

    def __init__(self, run_dir: str | os.PathLike, *, log: Callable[[str], None] = print, claim_wait_s: float = 0.0):
        """``claim_wait_s``: how long to wait for the run's lock when another holds it (a sweep's retry on a
        shared disk may find the lock of a lost node until its lease runs out); 0 refuses at once."""
        self.run_dir = Path(run_dir)
        self.log = log
        self.claim_wait_s = claim_wait_s
        self.redis = None  # EmbeddedRedis, when this driver runs one
        self.ray_context = None
        self.started_ray = False
        self.own_ray = False
        self.created_dir = False
        self.committed = False
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ context

    def __enter__(self) -> RunProcesses:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop what this session started, in reverse order; forget a run directory it created for nothing."""
        if self.started_ray:
            self.started_ray = self.own_ray = False
            ray.shutdown()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self.run_dir / RECORD).unlink()  # a clean stop: nothing of this session is left to clean up
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self.created_dir and not self.committed:
            shutil.rmtree(self.run_dir, ignore_errors=True)  # a run that never started leaves no directory
            self.created_dir = False

    # ------------------------------------------------------------ Ray

    def start_ray(self, cfg: Config, *, cpus: int) -> None:
        """Join or start Ray, unless this process already has it (a sweep's supervisor, a test).

        Without an address the run starts a local Ray of its own (``address="local"``): ``ray.init()``
        alone would join whatever cluster ``ray start`` left on this machine. Under ``ray job submit``
        (``RAY_ADDRESS`` set) it joins the job's cluster, as ``--address auto`` does.
        """
        if ray.is_initialized():
            return
        address = cfg.cluster.address or ("auto" if os.environ.get("RAY_ADDRESS") else "local")
        options = dict(address=address, include_dashboard=cfg.cluster.dashboard, log_to_driver=False)
        if address == "local":
            options["num_cpus"] = max(os.cpu_count() or 1, cpus)  # every process of the run has its CPU
        else:
            options.pop("include_dashboard")  # a joined cluster has its own (and refuses the option)
        self.ray_context = ray.init(**options)
        self.started_ray = True  # ray.shutdown() at the end: it stops a local Ray, and disconnects from a cluster
        self.own_ray = address == "local"

    @property
    def dashboard_url(self) -> str:
        url = getattr(self.ray_context, "dashboard_url", "") or ""
        return f"http://{url.removeprefix('http://')}" if url else ""

    # ------------------------------------------------------------ the run directory

    def claim(self) -> None:
        """Take RUN_DIR/driver.lock (creating RUN_DIR if needed); stop what a killed earlier driver left behind.

        Raises RunBusyError when a live driver holds the run.
        """
        if self._lock_fd is not None:
            return
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        deadline = time.monotonic() + self.claim_wait_s
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = self._record() or {}
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunBusyError(f"{self.run_dir} is being driven by another orrery process (pid "
                                       f"{holder.get('pid', '?')} on {holder.get('host', '?')}); stop it first, or "
                                       f"wait for it to end") from None
                if not said:
                    self.log(f"waiting for {self.run_dir / LOCK} (held by pid {holder.get('pid', '?')} on "
                             f"{holder.get('host', '?')}), at most {self.claim_wait_s:.0f} s")
                    said = True
                time.sleep(1.0)
        self._lock_fd = fd
        self._clean_up_after(self._record())

    def commit(self) -> None:
        """The run's files are written: from now on RUN_DIR stays, even if the run fails."""
        self.committed = True

    def record(self) -> None:
        """driver.json: what this session started, for the next driver of the run to clean up if this one is killed."""
        session_dir = self.ray_context.address_info.get("session_dir") if self.own_ray else None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3),
                  "ray_session_dir": session_dir, "redis_pid": self.redis.pid if self.redis is not None else None}
        write_atomic(self.run_dir / RECORD, json.dumps(record))

    def _record(self) -> dict | None:
        try:
            record = json.loads((self.run_dir / RECORD).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _clean_up_after(self, record: dict | None) -> None:
        """Stop the processes a killed earlier driver of this run started on this host (we hold the lock: it is gone)."""
        stop_orphan_redis(self.run_dir, self.log)  # found by its data directory, whatever the record says
        if not record or record.get("host") != socket.gethostname():
            return
        session_dir = record.get("ray_session_dir")
        if isinstance(session_dir, str) and session_dir:
            pids = session_processes(session_dir)
            if pids:
                self.log(f"stopping {len(pids)} process(es) of the local Ray a killed earlier driver of this run "
                         f"left running (pids {', '.join(map(str, pids))})")
                stop_processes(pids)

    # ------------------------------------------------------------ replay

    def start_replay(self, cfg: Config) -> str:
        """The replay's URL: ``cfg.replay.url``, else an embedded redis-server started in RUN_DIR/redis.

        The embedded server's URL is TCP on 127.0.0.1, for every process of the run (they all share its node);
        :attr:`local_url` is its Unix socket, the faster way in for the learner.
        """
        if cfg.replay.url:
            return cfg.replay.url
        from replay import EmbeddedRedis

        self.redis = EmbeddedRedis(self.run_dir).start()
        if self.redis.socket_path is None:
            self.log(f"the embedded Redis listens on TCP only: no Unix socket could be bound in {self.redis.dir} or "
                     f"a short private directory under /tmp; the learner reads over loopback TCP")
        return self.redis.url

    @property
    def local_url(self) -> str | None:
        """The embedded Redis's URL for processes on its node, to hand the learner: its Unix socket
        (``unix:///PATH?db=0&password=...``; its TCP URL when no socket could be bound); None with ``replay.url``
        (a cluster Redis) or before :meth:`start_replay`. It holds the password: pass it, never log it. The same
        URL stays valid after :meth:`keep_replay_up` restarts the server."""
        return self.redis.local_url if self.redis is not None else None

    def keep_replay_up(self) -> bool:
        """Restart an embedded Redis that stopped (on its AOF, same port, socket and password); True if it did."""
        if self.redis is None or self.redis.running:
            return False
        self.log("the embedded Redis stopped; restarting it on the same data (AOF)")
        self.redis.start()
        return True


# ---------------------------------------------------------------- leftovers of a killed driver

def stop_orphan_redis(run_dir: Path, log: Callable[[str], None] = print, timeout: float = 30.0) -> None:
    """Shut down an embedded Redis of this run that no driver owns any more, so that a new one can start.

    Call it only while holding the run's lock (or knowing its last driver is gone): a server that
    answers on the run's port with the run's data directory is then an orphan. SHUTDOWN makes it
    write its append-only file first: nothing acknowledged is lost.
    """
    redis_dir = Path(run_dir) / "redis"
    try:
        port = int((redis_dir / "port").read_text())
        password = (redis_dir / "password").read_text().strip()
    except (OSError, ValueError):
        return
    import redis

    from replay import Address

    client = Address(host="127.0.0.1", port=port, password=password).client(socket_connect_timeout=0.5,
                                                                             socket_timeout=5.0)
    try:
        if client.config_get("dir").get("dir") != str(redis_dir.resolve()):
            return
        pid = client.info("server").get("process_id")
        log(f"stopping the embedded Redis (pid {pid}) an earlier attempt of this run left running (its driver is gone)")
        client.shutdown()
    except (redis.RedisError, OSError):
        return  # nothing answers there, or the shutdown closed the connection
    finally:
        client.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except (OSError, TypeError, ValueError):
            return
        time.sleep(0.1)


def session_processes(session_dir: str) -> list[int]:
    """This user's processes that belong to the Ray session in ``session_dir``: named on their command line, or
    holding one of its files open (Ray's agents rename themselves, but keep their session's log files open)."""
    session = os.path.realpath(session_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            if session in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd).startswith(session + os.sep):
                    found.append(int(entry.name))
                    break
        except OSError:
            continue  # gone meanwhile, or not ours to look into
    return sorted(found)


def stop_processes(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds for those still alive."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
