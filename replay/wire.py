"""A minimal RESP2 connection for the sampler's hot path: bulk replies land straight in numpy memory.

Why not redis-py here: a B=50 x L=50 batch of 64x64x3 frames is 30 MiB. redis-py with
hiredis copies every reply three times (socket -> read buffer -> hiredis buffer -> bytes
object) and the batch then needs a fourth copy into one array; on the 2-core reference
machine that is 26-28 ms per batch against 7-8 ms here (tests/benchmarks/bench_replay.py),
where a frame range goes from the socket into its final place in the batch with one
``recv_into`` (which also releases the GIL, so sampler threads overlap). Everything else in
the replay uses redis-py.

Supports TCP and Unix sockets, AUTH (with an ACL user) and SELECT, pipelines of commands
(with a callback per command, run as soon as its reply has arrived: the sampler verifies a chunk
while the server is still sending the next ones), and the reply types simple string, error,
integer, bulk string and array. No TLS, no RESP3. Any socket or protocol failure closes the
connection (its stream position is unknown) and raises ReplayConnectionError; the next call
connects again. So does a reply that says the server is not ready (``-LOADING``: still loading
its append-only file after a restart; ``-BUSY``: running a long script): both are retryable.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence, Union

from replay.errors import NOT_READY, ReplayConnectionError, ReplayError, bounded
from replay.server import Address, auth_error

Arg = Union[bytes, str, int]
_BUFFER = 1 << 16  # read buffer; bulk replies larger than half of it bypass it
_RCVBUF = 4 << 20  # ask the kernel for a large receive buffer (capped by net.core.rmem_max)
_LEAD = 2  # groups of a windowed pipeline sent ahead of the one being read


class RespError(Exception):
    """An error reply from the server (``-ERR ...``, ``-NOSCRIPT ...``)."""

    @property
    def not_ready(self) -> bool:
        """The server is up but not ready (loading its data, busy with a script): retry later."""
        return str(self).startswith(NOT_READY)


class RespConnection:
    """One socket to one Redis server; not thread-safe (use one per thread)."""

    def __init__(self, address: Address, *, timeout: float = 60.0):
        if address.tls:
            raise ReplayError(f"the replay sampler does not speak TLS (rediss://) to {address.where}; use redis:// "
                              f"inside the cluster's private network or a Unix socket")
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)
        self._pos = 0  # first unread byte in _buf
        self._end = 0  # end of the received bytes in _buf

    # ------------------------------------------------------------ public

    def call(self, *args: Arg) -> Any:
        """Send one command, return its reply; an error reply raises RespError."""
        (reply,) = self.pipeline([args])
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Arg]], sinks: Sequence[memoryview | None] | None = None,
                 callbacks: Sequence[Callable[[Any], None] | None] | None = None, window: int = 0) -> list[Any]:
        """Send ``commands`` and read their replies in order, without a round trip per command.

        ``sinks[i]``, when given, is a writable byte memoryview: if reply i is a bulk string of
        exactly its size, the bytes are read straight into it and the reply is ``True``;
        otherwise the reply is returned as usual (``b""`` for GETRANGE on a missing key).
        ``callbacks[i]``, when given, is called with reply i as soon as it has been read, before
        the next reply is. Error replies are returned as RespError objects, not raised, except
        those of a server that is not ready (LOADING, BUSY): ReplayConnectionError, retryable.
        An exception from a callback closes the connection (the rest of the replies is unread)
        and propagates.

        ``window`` > 0 sends the commands in groups of that many, ``_LEAD`` groups ahead of the
        reader (group g+2 goes out when the reader reaches group g), instead of all at once.
        Redis executes what it has read before it writes, so one large pipeline of big replies
        makes it build them all in memory first while the reader waits; groups keep it sending
        while the reader takes in (and verifies) the previous replies: a B=50 x L=50 batch in
        groups of one chunk is 15-25 % faster on the 2-core reference machine.
        """
        count = len(commands)
        for name, given in (("sinks", sinks), ("callbacks", callbacks)):
            if given is not None and len(given) != count:
                raise ValueError(f"pipeline: {len(given)} {name} for {count} commands")
        size = window if window > 0 else max(count, 1)
        groups = [_pack(commands[i:i + size]) for i in range(0, count, size)]
        self._ensure_connected()
        replies: list[Any] = []
        try:
            assert self._sock is not None
            self._sock.sendall(b"".join(groups[:_LEAD]))
            for i in range(count):
                if i % size == 0 and i // size + _LEAD < len(groups):
                    self._sock.sendall(groups[i // size + _LEAD])  # the server stays _LEAD groups ahead
                reply = self._reply(sinks[i] if sinks is not None else None)
                replies.append(reply)
                if callbacks is not None and callbacks[i] is not None:
                    try:
                        callbacks[i](reply)
                    except BaseException:
                        self.close()
                        raise
        except (OSError, ValueError, IndexError) as error:  # socket errors, timeouts, garbled protocol
            if self._sock is None:
                raise  # a callback's own error, already closed
            self.close()
            raise ReplayConnectionError(bounded(f"connection to Redis at {self.address.where} failed: {error}; "
                                                f"is the server still running?")) from None
        for reply in replies:
            if isinstance(reply, RespError) and reply.not_ready:
                raise ReplayConnectionError(not_ready_message(self.address.where, reply)) from None
        return replies

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._pos = self._end = 0
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # ------------------------------------------------------------ connection

    def _ensure_connected(self) -> None:
        if self._sock is not None:
            return
        address = self.address
        try:
            if address.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        except OSError as error:
            raise ReplayConnectionError(f"cannot reach Redis at {address.where}: {error}; is it running? for a "
                                        f"local run leave replay.url empty to start an embedded server") from None
        self._sock, self._pos, self._end = sock, 0, 0
        login: list[list[Arg]] = []
        if address.password is not None:
            login.append(["AUTH", address.username, address.password] if address.username
                         else ["AUTH", address.password])
        if address.db:
            login.append(["SELECT", address.db])
        if not login:
            return
        try:
            sock.sendall(_pack(login))
            replies = [self._reply(None) for _ in login]
        except (OSError, ValueError, IndexError) as error:
            self.close()
            raise ReplayConnectionError(f"connection to Redis at {address.where} failed while logging in: "
                                        f"{error}") from None
        for reply in replies:
            if isinstance(reply, RespError):
                self.close()
                if str(reply).startswith(("WRONGPASS", "NOAUTH", "ERR AUTH", "ERR invalid password")):
                    raise auth_error(address, reply)
                if reply.not_ready:
                    raise ReplayConnectionError(not_ready_message(address.where, reply))
                raise ReplayError(bounded(f"Redis at {address.where} refused the login: {reply}"))

    # ------------------------------------------------------------ reading

    def _reply(self, sink: memoryview | None) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            if sink is not None and size == sink.nbytes:
                self._read_into(sink, size)
                return True
            return self._read_bytes(size)
        if kind == b":":
            return int(rest)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply(None) for _ in range(count)]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        raise ValueError(f"unexpected reply type {line[:20]!r}")

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos, self._end)
            if end >= 0:
                line = bytes(self._view[self._pos:end])
                self._pos = end + 2
                return line
            self._fill(self._end - self._pos + 2)

    def _read_bytes(self, size: int) -> bytes:
        while self._end - self._pos < size + 2:
            self._fill(size + 2)
        data = bytes(self._view[self._pos:self._pos + size])
        self._pos += size + 2
        return data

    def _read_into(self, sink: memoryview, size: int) -> None:
        if size + 2 <= len(self._buf) // 2:  # small: through the buffer (one recv serves many replies)
            while self._end - self._pos < size + 2:
                self._fill(size + 2)
            sink[:] = self._view[self._pos:self._pos + size]
            self._pos += size + 2
            return
        have = min(self._end - self._pos, size)
        sink[:have] = self._view[self._pos:self._pos + have]
        self._pos += have
        assert self._sock is not None
        while have < size:  # large: straight from the socket into place
            got = self._sock.recv_into(sink[have:], size - have)
            if not got:
                raise OSError("the server closed the connection")
            have += got
        while self._end - self._pos < 2:
            self._fill(2)
        self._pos += 2  # the bulk string's trailing CRLF

    def _fill(self, need: int) -> None:
        """Receive more bytes, first making room for ``need`` unread bytes in the buffer."""
        unread = self._end - self._pos
        if len(self._buf) < need:  # a reply larger than the buffer and not read into a sink
            grown = bytearray(max(need, 2 * len(self._buf)))
            grown[:unread] = self._view[self._pos:self._end]
            self._buf, self._view = grown, memoryview(grown)
            self._pos, self._end = 0, unread
        elif self._pos and (unread == 0 or len(self._buf) - self._pos < need):
            self._buf[:unread] = bytes(self._view[self._pos:self._end])  # a copy: the ranges may overlap
            self._pos, self._end = 0, unread
        assert self._sock is not None
        got = self._sock.recv_into(self._view[self._end:])
        if not got:
            raise OSError("the server closed the connection")
        self._end += got


def not_ready_message(where: str, error: BaseException) -> str:
    """The message for a server that answered LOADING or BUSY."""
    return bounded(f"Redis at {where} is not ready ({bounded(str(error), 80)}): it is loading its data after a "
                   f"restart or running a long script; wait and retry (catch replay.REDIS_DOWN)")


def _pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """RESP arrays of bulk strings for ``commands``."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)  # (exact types first: this runs for every argument of every sampled chunk)
            if kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is bytes or isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int) and not isinstance(arg, bool):
                data = b"%d" % arg
            else:
                raise TypeError(f"RESP argument {arg!r}: expected bytes, str or int")
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
