"""The Redis sequence replay: embedded server, episode writer, chunk sampler, eviction, limiter.

    server = EmbeddedRedis(run_dir).start()            # or a cluster's redis:// URL
    replay = SequenceReplay(server.url, run, capacity_steps=cfg.replay.capacity_steps,
                            spec=ReplaySpec.for_env(env.spec))   # the run driver; actors and learner pass neither
    replay.add(episode)                                  # actors: atomic, idempotent by episode id
    batch = replay.sample(B, L)                          # learner: uniform over all valid chunk starts, verified
"""

from replay.errors import (
    REDIS_DOWN, LimiterTimeout, ReplayAuthError, ReplayConnectionError, ReplayEmptyError, ReplayError, ServerNotFoundError,
)
from replay.limiter import LocalCounters, SamplesPerInsert
from replay.prefetch import Prefetcher
from replay.server import Address, EmbeddedRedis, connect
from replay.spec import ReplaySpec
from replay.parse import QuarantineRecord
from replay.store import SequenceReplay

__all__ = [
    "REDIS_DOWN", "Address", "EmbeddedRedis", "LimiterTimeout", "LocalCounters", "Prefetcher", "QuarantineRecord",
    "ReplayAuthError", "ReplayConnectionError", "ReplayEmptyError", "ReplayError", "ReplaySpec", "SamplesPerInsert",
    "SequenceReplay", "ServerNotFoundError", "connect",
]
