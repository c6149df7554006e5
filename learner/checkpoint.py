"""Checkpoints of the Learner: written atomically, the one before kept, read without running any code.

    checkpoint.save(run_dir / "checkpoints", learner.state_dict())     # latest.pt; the old one becomes previous.pt
    state = checkpoint.load(run_dir / "checkpoints", check=learner.load_state_dict)

Reading uses ``torch.load(..., weights_only=True)``: a checkpoint holds tensors and plain numbers,
and nothing in it is unpickled as arbitrary objects (a file that asks for more is refused, and no
code in it runs). A file that cannot be read — truncated, corrupt, another program's, or one whose
tensors do not fit the model (``check`` raises) — is never used: :func:`load` falls back to
``previous.pt`` (the checkpoint before it, kept by :func:`save`) and says so through ``warn``, and
raises :class:`CheckpointError` (one line) when neither is usable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from common.fileio import write_atomic

LATEST = "latest.pt"
PREVIOUS = "previous.pt"
_KEYS = {"model": dict, "optimizer": dict, "updates": int, "skipped": int, "generator": torch.Tensor}


class CheckpointError(ValueError):
    """No usable checkpoint where one is expected; the message names the file, what is wrong and what to do."""


def save(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``directory/latest.pt`` atomically; the checkpoint it replaces stays as previous.pt.

    At every moment latest.pt is a whole file (the old one until the new one is renamed over it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target, previous = directory / LATEST, directory / PREVIOUS
    if target.exists():
        # previous.pt becomes a second name of today's latest.pt (a hard link: no copy, never half-written).
        link = directory / f".{PREVIOUS}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.link(target, link)
        os.replace(link, previous)
    return write_atomic(target, lambda handle: torch.save(state, handle))


def read(path: str | os.PathLike) -> dict[str, Any]:
    """One checkpoint file, checked to be a Learner state; CheckpointError (one line) otherwise."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except Exception as error:  # truncated zip, garbage, a pickle asking for code: torch raises many kinds
        first = (str(error).strip().splitlines() or [""])[0]
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            why = "it asks to unpickle objects other than tensors and numbers, which is refused (no code ran)"
        else:
            why = f"it is not a readable checkpoint (truncated or corrupt: {type(error).__name__}: {first[:120]})"
        raise CheckpointError(f"{path}: {why}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a Learner checkpoint (holds a {type(state).__name__}, not a dict)")
    for key, kind in _KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(f"{path}: not a Learner checkpoint (its {key!r} is missing or not a "
                                  f"{kind.__name__})")
    if state["updates"] < 0 or state["skipped"] < 0:
        raise CheckpointError(f"{path}: not a Learner checkpoint (negative update counts)")
    return state


def load(directory: str | os.PathLike, *, check: Callable[[dict[str, Any]], object] | None = None,
         warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The newest usable checkpoint in ``directory``: latest.pt, else previous.pt; None when there is none at all.

    ``check(state)`` is whatever the caller will do with it (e.g. ``Learner.load_state_dict``); an
    exception from it makes that file unusable, like an unreadable one. Falling back to previous.pt
    is reported through ``warn``. Raises CheckpointError when files exist but none is usable.
    """
    directory = Path(directory)
    problems = []
    for name in (LATEST, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = read(path)
            if check is not None:
                _check(path, state, check)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems and warn is not None:
            warn(f"{problems[0]}; using the checkpoint before it, {path} ({state['updates']} updates)")
        return state
    if not problems:
        return None
    raise CheckpointError(f"{'; '.join(problems)}; no usable checkpoint is left in {directory}: restore one from a "
                          f"backup, or move the directory away to train from the start")


def _check(path: Path, state: dict[str, Any], check: Callable[[dict[str, Any]], object]) -> None:
    try:
        check(state)
    except CheckpointError:
        raise
    except Exception as error:  # a size mismatch, a missing key, an optimiser of another model
        first = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: does not fit this run's model ({type(error).__name__}: {first[:160]}); was it "
                              f"written with another config?") from None
