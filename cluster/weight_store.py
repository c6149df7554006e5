"""The weight store: a small named Ray actor (``common.names.weight_store_name(run)``) holding the latest (version, ObjectRef) of the model weights.

The learner puts the weights into the object store once per publication and hands the store
only the reference; actors ask for a version newer than theirs and fetch the weights from the
object store themselves. Nobody waits on the learner, and the learner waits on nobody.
"""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class WeightStore:
    def __init__(self):
        self._version = -1
        self._ref: list = []  # the ObjectRef wrapped in a list, so Ray passes the reference, not the weights

    def publish(self, version: int, ref: list) -> None:
        """Record a newer version (an older one, e.g. from a restarted learner, replaces it too)."""
        self._version, self._ref = version, ref

    def newer_than(self, version: int) -> tuple[int, list] | None:
        """(version, [ObjectRef]) when the stored version differs from ``version``, else None."""
        if self._version < 0 or self._version == version:
            return None
        return self._version, self._ref

    def version(self) -> int:
        return self._version
