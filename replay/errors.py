"""Errors of the replay: each message names the problem and how to fix it, never a password or stored bytes."""

from __future__ import annotations

import redis

MESSAGE_LIMIT = 300
"""Most characters of a replay error message that quotes anything from outside (Redis replies, stored fields)."""


class ReplayError(RuntimeError):
    """The replay cannot do what was asked (bad state, bad setting, corrupt data)."""


class ReplayConnectionError(ReplayError, ConnectionError):
    """The Redis server cannot be reached, the connection broke, or the server is not ready (loading, busy)."""


class ReplayAuthError(ReplayError):
    """The Redis server rejected the password (or wants one and got none)."""


class ServerNotFoundError(ReplayError, FileNotFoundError):
    """The redis-server binary is not installed (embedded server)."""


class ReplayEmptyError(ReplayError):
    """No stored episode is long enough to yield a chunk of the asked length."""


class LimiterTimeout(ReplayError, TimeoutError):
    """A samples-per-insert wait ran out of time: the other side is not keeping up (or stopped)."""


REDIS_DOWN = (ConnectionError, redis.ConnectionError, redis.TimeoutError)
"""What a restarting Redis raises: ReplayConnectionError from the replay's own calls, redis-py's errors from
raw counter reads. Catch it to wait and reconnect."""

NOT_READY = ("LOADING", "BUSY")
"""Error replies of a server that is up but not ready (loading its append-only file, running a long script):
retryable, so they surface as ReplayConnectionError."""


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, keeping both ends (the problem leads, the fix ends a message)."""
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]} ... {text[len(text) - (limit - 5 - keep):]}"
