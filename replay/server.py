"""The Redis server of a run: an embedded ``redis-server`` child process, and checked connections.

A local run (``replay.url`` empty) starts :class:`EmbeddedRedis` in ``RUN_DIR/redis``::

    RUN_DIR/redis/        mode 0700
        password          0600, generated once (secrets.token_urlsafe), reused on restart
        port              the last port, tried first on restart so that clients' URLs stay valid
        redis.log         the server's log (its tail is shown when it fails to start)
        appendonlydir/    the AOF (fsync every second): what a restart reloads
        redis.sock        a Unix socket (mode 0700), when its path fits (see below)

The server binds 127.0.0.1 only (protected mode on), never port 6379 (Ray's), and reads its
configuration from stdin, so the password appears on no command line and in no file but
``password``. It also listens on a Unix socket, with the same password: processes on the run's
node (the learner, which reads about 1 GB/s at GPU speed) use :attr:`EmbeddedRedis.unix_url`:
only this user can open it, where loopback TCP is open to every local user (behind the
password). A socket path holds at most 107 bytes (``sun_path``), so the socket is
``RUN_DIR/redis/redis.sock`` when that path fits and the file system takes a socket (a probe
bind tells), else ``$TMPDIR/orrery-redis-UID/HASH.sock`` (then ``/tmp/...``): a directory of
this user's, checked to be a real directory owned by them and kept at mode 0700, and HASH the
first 16 hex digits of the SHA-256 of the resolved ``RUN_DIR/redis``, so one run directory
always gets the same path (a restart brings the same URL back). If neither works the server
listens on TCP only and :attr:`~EmbeddedRedis.unix_url` is None.

A cluster run gives ``replay.url`` instead; :func:`connect` checks either kind and turns the
usual failures (unreachable, wrong or missing password) into errors that say what to do, as
:class:`EmbeddedRedis` does for a missing ``redis-server`` binary.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.retry import Retry

from common.urls import redact
from replay.errors import ReplayAuthError, ReplayConnectionError, ReplayError, ServerNotFoundError

RAY_REDIS_PORT = 6379  # Ray's default GCS/Redis port: never take it
SOCKET = "redis.sock"  # the Unix socket's name in RUN_DIR/redis
MAX_SOCKET_PATH = 107  # bytes of a Unix socket path (sun_path is 108 with the NUL; 104 on macOS, where binding tells)
_LOCAL_HINT = "for a local run leave replay.url empty to start an embedded server"
_INSTALL_HINT = ("install it: apt-get install redis-server (Debian/Ubuntu; scripts/system-deps.sh does it), "
                 "brew install redis (macOS); or set replay.url to a running Redis")


@dataclasses.dataclass(frozen=True)
class Address:
    """Where a Redis server listens and how to log in; ``repr`` and ``where`` never show the password."""

    host: str = "127.0.0.1"
    """TCP host (ignored when ``path`` is set)."""
    port: int = 6379
    """TCP port."""
    path: str | None = None
    """Unix socket path; when set the connection uses it instead of TCP."""
    password: str | None = dataclasses.field(default=None, repr=False)
    """AUTH password (None: no AUTH)."""
    username: str | None = None
    """ACL user name (None: the default user)."""
    db: int = 0
    """Logical database number."""
    tls: bool = False
    """rediss:// (TLS); the sampler's direct connection does not speak TLS."""

    @classmethod
    def from_url(cls, url: str) -> Address:
        """Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``,
        ``unix://[[user]:password@]/path[?db=N]`` or ``unix:///path?db=N&password=...`` (redis-py's forms;
        a password in the query is URL-quoted)."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ReplayError(f"replay URL {redact(url)!r}: unknown scheme {scheme!r}; expected "
                              f"redis://:PASSWORD@HOST:PORT/0, rediss://... or unix:///PATH?db=0&password=PASSWORD")
        try:
            kwargs = parse_url(url)
        except ValueError as error:
            raise ReplayError(f"replay URL {redact(url)!r} is malformed: {error}") from None
        return cls(host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)), path=kwargs.get("path"),
                   password=kwargs.get("password"), username=kwargs.get("username"),
                   db=int(kwargs.get("db", 0)), tls=scheme == "rediss")

    @classmethod
    def from_client(cls, client: redis.Redis) -> Address:
        """The address a redis-py client connects to (its pool's settings)."""
        kwargs = client.connection_pool.connection_kwargs
        return cls(host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)), path=kwargs.get("path"),
                   password=kwargs.get("password"), username=kwargs.get("username"), db=int(kwargs.get("db", 0)),
                   tls=issubclass(client.connection_pool.connection_class, redis.SSLConnection))

    @property
    def where(self) -> str:
        """``host:port`` or ``unix socket PATH``, for messages."""
        return f"unix socket {self.path}" if self.path else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL of this address, password included: hand it to clients, do not log it.

        A Unix socket's is redis-py's form ``unix:///PATH?db=N&password=PASSWORD``
        (``unix://USER:PASSWORD@/PATH?db=N`` with an ACL user).
        """
        auth = ""
        if self.password is not None or self.username:
            auth = (f"{urllib.parse.quote(self.username or '', safe='')}:"
                    f"{urllib.parse.quote(self.password or '', safe='')}@")
        if self.path:
            path = urllib.parse.quote(self.path, safe="/")
            if self.username:
                return f"unix://{auth}{path}?db={self.db}"
            password = "" if self.password is None else f"&password={urllib.parse.quote(self.password, safe='')}"
            return f"unix://{path}?db={self.db}{password}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{auth}{host}:{self.port}/{self.db}"

    def client(self, **options) -> redis.Redis:
        """A redis-py client for this address (not yet connected)."""
        settings = dict(db=self.db, password=self.password, username=self.username,
                        socket_connect_timeout=5.0, socket_timeout=60.0, socket_keepalive=True,
                        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2))
        settings.update(options)
        if self.path:
            return redis.Redis(unix_socket_path=self.path, **settings)
        return redis.Redis(host=self.host, port=self.port, ssl=self.tls, **settings)


def connect(url_or_address: str | Address) -> redis.Redis:
    """A redis-py client that has answered PING; clear errors otherwise.

    Raises ReplayConnectionError (unreachable) or ReplayAuthError (wrong or missing password).
    """
    address = url_or_address if isinstance(url_or_address, Address) else Address.from_url(url_or_address)
    client = address.client()
    check(client, address)
    return client


def check(client: redis.Redis, address: Address | None = None) -> None:
    """PING through ``client``; translate connection and login failures into replay errors."""
    address = address or Address.from_client(client)
    try:
        client.ping()
    except redis.AuthenticationError as error:
        raise auth_error(address, error) from None
    except redis.ResponseError as error:
        if str(error).startswith(("NOAUTH", "WRONGPASS")):
            raise auth_error(address, error) from None
        raise
    except redis.BusyLoadingError:
        raise ReplayConnectionError(f"Redis at {address.where} is still loading its data (after a restart); wait "
                                    f"and retry (catch replay.REDIS_DOWN)") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        raise ReplayConnectionError(
            f"cannot reach Redis at {address.where}: {_scrub(error, address)}; is it running? {_LOCAL_HINT}") from None


def auth_error(address: Address, error: BaseException) -> ReplayAuthError:
    """The error for a refused login at ``address`` (the password is never shown)."""
    detail = _scrub(error, address)
    if address.password is None:
        form = (f"unix://{address.path}?db={address.db}&password=PASSWORD" if address.path
                else f"redis://:PASSWORD@{address.host}:{address.port}/{address.db}")
        return ReplayAuthError(f"Redis at {address.where} requires a password ({detail}); put it in the URL: {form}")
    return ReplayAuthError(f"Redis at {address.where} rejected the password ({detail}); check the password in "
                           f"replay.url (an embedded server keeps it in RUN_DIR/redis/password)")


def _scrub(error: BaseException, address: Address) -> str:
    text = str(error) or type(error).__name__
    return text.replace(address.password, "***") if address.password else text


# ---------------------------------------------------------------- embedded server

class EmbeddedRedis:
    """A ``redis-server`` child process for one run directory; see the module docstring.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Restarting on the same
    directory reuses the password and reloads the AOF.
    """

    def __init__(self, run_dir: str | os.PathLike, *, binary: str = "redis-server", start_timeout: float = 60.0,
                 port: int | None = None):
        """``port``: a fixed port (None: the last one if free, else a free one, never 6379)."""
        self.dir = Path(run_dir) / "redis"
        self.binary = binary
        self.start_timeout = start_timeout
        self._fixed_port = port
        self.port = 0
        self.password = ""
        self.socket_path: Path | None = None
        """The Unix socket it also listens on (None: TCP only); chosen at each start, the same for one directory."""
        self._process: subprocess.Popen | None = None
        self._log_start = 0  # where this start's lines begin in redis.log

    # ------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (AOF loaded); no-op if running."""
        if self.running:
            return self
        binary = shutil.which(self.binary)
        if binary is None:
            raise ServerNotFoundError(f"redis-server not found (looked for {self.binary!r} on PATH); {_INSTALL_HINT}")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.password = self._load_password()
        self._refuse_second_server()
        self.socket_path = self._choose_socket()
        for attempt in range(5):
            self.port = self._choose_port(first=attempt == 0)
            log = self.dir / "redis.log"
            self._log_start = log.stat().st_size if log.exists() else 0
            self._process = self._spawn(binary)
            try:
                self._wait_ready()
                break
            except _PortTaken:
                continue  # another process took the port between our probe and the bind
        else:
            raise ReplayError(f"redis-server could not bind a free port after 5 tries; {self._log_tail()}")
        (self.dir / "port").write_text(str(self.port))
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server fsyncs its AOF and exits), SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self.socket_path is not None and _is_socket(self.socket_path):
            self.socket_path.unlink(missing_ok=True)  # a clean shutdown removes it; a killed server leaves it

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (tests of durability)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ where it is

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def address(self) -> Address:
        return Address(host="127.0.0.1", port=self.port, password=self.password, db=0)

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT/0`` (holds the password: do not log it)."""
        return self.address.url

    @property
    def unix_address(self) -> Address | None:
        """The Unix socket's address (same password), None when the server listens on TCP only."""
        if self.socket_path is None:
            return None
        return Address(path=str(self.socket_path), password=self.password, db=0)

    @property
    def unix_url(self) -> str | None:
        """``unix:///PATH?db=0&password=PASSWORD`` for processes on this node (holds the password: do not log
        it); None when the server listens on TCP only."""
        address = self.unix_address
        return address.url if address is not None else None

    @property
    def local_url(self) -> str:
        """The URL for processes on this node (the learner): :attr:`unix_url`, which only this user can open, else
        :attr:`url` (TCP loopback). Measured no faster than loopback TCP (README, Replay at GPU speed)."""
        return self.unix_url or self.url

    def client(self) -> redis.Redis:
        """A checked redis-py client."""
        return connect(self.address)

    # ------------------------------------------------------------ internals

    def _load_password(self) -> str:
        path = self.dir / "password"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)
            password = path.read_text().strip()
            if not password:
                raise ReplayError(f"{path} is empty; delete it to generate a new password "
                                  f"(the AOF does not store the password)") from None
            return password
        password = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        return password

    def _refuse_second_server(self) -> None:
        """Two servers must never share one AOF: fail if this directory's server is still up (an orphan)."""
        try:
            port = int((self.dir / "port").read_text())
        except (OSError, ValueError):
            return
        probe = dataclasses.replace(self.address, port=port).client(
            socket_connect_timeout=0.5, socket_timeout=2.0, retry=Retry(ExponentialBackoff(), 0))
        try:
            same_dir = probe.config_get("dir").get("dir") == str(self.dir.resolve())
            pid = probe.info("server").get("process_id")
        except (redis.RedisError, OSError):
            return  # nothing (of ours) answers there
        finally:
            probe.close()
        if same_dir:
            raise ReplayError(f"a redis-server for {self.dir} is already running (pid {pid}, port {port}), perhaps "
                              f"left by a crashed run; stop it (kill {pid}) or pass its URL as replay.url")

    def _choose_socket(self) -> Path | None:
        """Where the Unix socket goes: RUN_DIR/redis/redis.sock, else a short private directory, else None."""
        own = self.dir.resolve()
        key = hashlib.sha256(os.fsencode(own)).hexdigest()[:16]
        shared = [Path(base) / f"orrery-redis-{os.getuid()}" for base in dict.fromkeys([tempfile.gettempdir(), "/tmp"])]
        for path in [own / SOCKET, *(directory / f"{key}.sock" for directory in shared)]:
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                continue
            if path.parent != own and not _private_dir(path.parent):
                continue
            if _can_bind(path):
                return path
        return None

    def _choose_port(self, first: bool) -> int:
        if self._fixed_port:
            return self._fixed_port
        if first:
            try:
                last = int((self.dir / "port").read_text())
                if last != RAY_REDIS_PORT and _port_free(last):
                    return last
            except (OSError, ValueError):
                pass
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            if port != RAY_REDIS_PORT:
                return port

    def _spawn(self, binary: str) -> subprocess.Popen:
        lines = [
            "bind 127.0.0.1", "protected-mode yes", f"port {self.port}", f'requirepass "{self.password}"',
            f'dir "{self.dir.resolve()}"', f'logfile "{(self.dir / "redis.log").resolve()}"', "daemonize no",
            "appendonly yes", "appendfsync everysec", 'save ""', "maxmemory-policy noeviction",
        ]
        if self.socket_path is not None:  # same password; 700: only this user (the directory is private too)
            lines += [f"unixsocket {_quoted(str(self.socket_path))}", "unixsocketperm 700"]
        # The config arrives on stdin ("redis-server -"): the password is on no command line.
        # A new session keeps Ctrl-C in the terminal from killing it before the driver stops it.
        process = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        assert process.stdin is not None
        try:
            process.stdin.write(("\n".join(lines) + "\n").encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # it exited at once; _wait_ready reports the exit code and the log
        return process

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        probe = self.address.client(socket_connect_timeout=1.0, socket_timeout=5.0,
                                    retry=Retry(ExponentialBackoff(), 0))
        try:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    self._process = None
                    if "Address already in use" in self._log_tail() and not self._fixed_port:
                        raise _PortTaken()
                    raise ReplayError(f"redis-server exited with code {code} while starting; {self._log_tail()}")
                try:
                    if probe.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # still loading the AOF
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.stop(timeout=2.0)
                    raise ReplayError(f"redis-server did not answer PING within {self.start_timeout:.0f} s; "
                                      f"{self._log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def _log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines this start wrote to redis.log (password masked)."""
        path = self.dir / "redis.log"
        try:
            with open(path, "rb") as file:
                file.seek(self._log_start)
                tail = file.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"no log at {path}"
        return f"last lines of {path}:\n" + "\n".join(tail).replace(self.password, "***")


class _PortTaken(Exception):
    pass


def _quoted(text: str) -> str:
    """``text`` as a double-quoted redis.conf argument."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _private_dir(path: Path) -> bool:
    """Make ``path`` (mode 0700) or accept it if it is a real directory of this user's, then made 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False  # a link, a file, or someone else's directory: not a place for our socket
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except OSError:
        return False
    return True


def _can_bind(path: Path) -> bool:
    """Whether a Unix socket can be bound at ``path`` (its length, the file system); a stale socket there is removed.

    Call it only once this directory's own server is known to be down (``_refuse_second_server``): redis-server
    removes a socket file it finds at start anyway, and anything that is not a socket is left alone.
    """
    if os.path.lexists(path):
        if not _is_socket(path):
            return False
        try:
            path.unlink()
        except OSError:
            return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.bind(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    try:
        path.unlink()
    except OSError:
        return False
    return True


def _port_free(port: int) -> bool:
    """Whether redis-server could bind ``port`` (it sets SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
