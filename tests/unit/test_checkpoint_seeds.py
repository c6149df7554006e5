"""Atomic checkpoints that load with weights_only, fall back when damaged; distinct actor seeds across restarts."""

import os

import pytest
import torch

from actors.worker import actor_seed
from common.config import load_config
from learner import checkpoint
from learner.learner import Learner


def small_learner(**overrides):
    return Learner(load_config("debug", ["model.cnn_depth=2", *[f"{k}={v}" for k, v in overrides.items()]]), 2)


def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    assert checkpoint.load(tmp_path / "none") is None
    learner = small_learner()
    path = checkpoint.save(tmp_path, learner.state_dict())
    first = path.stat().st_ino
    state = checkpoint.load(tmp_path)  # weights_only=True inside: plain tensors and numbers only
    assert state["updates"] == 0 and set(state["model"]) == set(learner.model.state_dict())
    learner.updates = 5
    checkpoint.save(tmp_path, learner.state_dict())
    assert checkpoint.load(tmp_path)["updates"] == 5
    assert path.stat().st_ino != first, "a new file is renamed over the old one"
    assert (tmp_path / "previous.pt").stat().st_ino == first, "the checkpoint it replaced is kept as previous.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"], "no temporary file is left"


class Payload:
    """An arbitrary class: unpickling it could run code, so a checkpoint holding one must not load."""


class Exploit:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_refuses_pickled_objects_and_runs_no_code(tmp_path):
    torch.save({"model": {}, "payload": Payload()}, tmp_path / "latest.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refused .no code ran."):
        checkpoint.load(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": Exploit(marker)}, tmp_path / "latest.pt")
    with pytest.raises(checkpoint.CheckpointError, match="unpickle objects"):
        checkpoint.load(tmp_path)
    assert not marker.exists(), "nothing in the checkpoint ran"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign", "shapes"])
def test_a_damaged_latest_falls_back_to_the_one_before_it_with_a_warning(tmp_path, damage):
    learner = small_learner()
    learner.updates = 3
    checkpoint.save(tmp_path, learner.state_dict())
    learner.updates = 8
    latest = checkpoint.save(tmp_path, learner.state_dict())
    data = latest.read_bytes()
    if damage == "truncated":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        latest.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        latest.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, latest)
    else:  # a whole checkpoint of another model: readable, but it does not fit
        checkpoint.save(tmp_path / "other", small_learner(**{"model.deter_size": 48}).state_dict())
        latest.write_bytes((tmp_path / "other" / "latest.pt").read_bytes())
    warnings = []
    fresh = small_learner()
    state = checkpoint.load(tmp_path, check=fresh.load_state_dict, warn=warnings.append)
    assert state["updates"] == 3 and fresh.updates == 3, "the previous checkpoint, loaded whole"
    assert len(warnings) == 1 and "latest.pt" in warnings[0] and "previous.pt" in warnings[0]
    assert "\n" not in warnings[0] and len(warnings[0]) < 600


def test_no_usable_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "latest.pt").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "previous.pt").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load(tmp_path)
    message = str(error.value)
    assert "latest.pt" in message and "previous.pt" in message and "no usable checkpoint" in message
    assert "\n" not in message


def test_actor_seeds_are_distinct():
    seeds = {actor_seed(0, session, index, incarnation)
             for session in range(3) for index in range(8) for incarnation in range(4)}
    assert len(seeds) == 3 * 8 * 4
    assert actor_seed(0, 0, 1, 0) == actor_seed(0, 0, 1, 0)
    assert all(0 <= s < 2**31 for s in seeds)
