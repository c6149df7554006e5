"""Opening a run's replay from a process that may start while its Redis restarts (a restarted learner or actor).

    replay = open_replay(url, run, wait_s=120)    # SequenceReplay, once the server answers

``url`` is any replay URL: ``redis://:PASSWORD@HOST:PORT/0``, or for the learner on the node of an
embedded Redis its Unix socket, ``unix:///PATH?db=0&password=PASSWORD`` (``RunProcesses.local_url``).

A Ray actor's constructor that raised would leave the actor dead for good (Ray restarts actors that
crash, not ones whose constructor fails), so workers wait for the server here instead.
"""

from __future__ import annotations

import time

from replay.errors import REDIS_DOWN
from replay.store import SequenceReplay


def open_replay(url: str, run: str, *, wait_s: float, poll_s: float = 1.0, **options) -> SequenceReplay:
    """``SequenceReplay(url, run, **options)``, retried while the server is unreachable or loading, up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return SequenceReplay(url, run, **options)
        except REDIS_DOWN:
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)
