"""Atomic checkpoints that load with weights_only, and distinct actor seeds across restarts and sessions."""

import pickle

import pytest
import torch

from actors.worker import actor_seed
from common.config import load_config
from learner import checkpoint
from learner.learner import Learner


def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    assert checkpoint.load(tmp_path / "none") is None
    learner = Learner(load_config("debug", ["model.cnn_depth=2"]), 2)
    path = checkpoint.save(tmp_path, learner.state_dict())
    first = path.stat().st_ino
    state = checkpoint.load(tmp_path)  # weights_only=True inside: plain tensors and numbers only
    assert state["updates"] == 0 and set(state["model"]) == set(learner.model.state_dict())
    learner.updates = 5
    checkpoint.save(tmp_path, learner.state_dict())
    assert checkpoint.load(tmp_path)["updates"] == 5
    assert path.stat().st_ino != first, "a new file is renamed over the old one"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"], "no temporary file is left behind"


class Payload:
    """An arbitrary class: unpickling it could run code, so a checkpoint holding one must not load."""


def test_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"model": {}, "payload": Payload()}, tmp_path / "latest.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoint.load(tmp_path)


def test_actor_seeds_are_distinct():
    seeds = {actor_seed(0, session, index, incarnation)
             for session in range(3) for index in range(8) for incarnation in range(4)}
    assert len(seeds) == 3 * 8 * 4
    assert actor_seed(0, 0, 1, 0) == actor_seed(0, 0, 1, 0)
    assert all(0 <= s < 2**31 for s in seeds)
