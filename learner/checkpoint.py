"""Atomic checkpoints of the Learner: written to a temporary file, then renamed over ``latest.pt``.

Loading uses ``torch.load(..., weights_only=True)``: a checkpoint holds tensors and plain numbers,
and nothing in it is unpickled as arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.pt"


def save(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``directory/latest.pt`` atomically (a reader sees the old or the new file, never half)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / LATEST
    tmp = directory / f".{LATEST}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The latest checkpoint in ``directory``, or None when there is none."""
    path = Path(directory) / LATEST
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=True)
