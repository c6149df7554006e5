"""Errors of the replay: each message names the problem and how to fix it, never a password."""

from __future__ import annotations

import redis


class ReplayError(RuntimeError):
    """The replay cannot do what was asked (bad state, bad setting, corrupt data)."""


class ReplayConnectionError(ReplayError, ConnectionError):
    """The Redis server cannot be reached, or the connection broke."""


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
