"""The Learner as a plain class: updates, checkpoints that continue identically, bad batches."""

import io

import numpy as np
import pytest
import torch

from common.config import load_config
from learner.learner import Learner
from tests.synthetic import moving_square

CFG = load_config("debug", ["model.cnn_depth=2", "model.deter_size=16", "model.hidden_size=16"])


def batches(count, seed=0, size=3, length=5):
    return [moving_square(size, length, seed + i) for i in range(count)]


def params(learner):
    return [p.detach().clone() for p in learner.model.parameters()]


def test_update_changes_weights_and_reports_metrics():
    learner = Learner(CFG, 2, seed=0)
    before = params(learner)
    metrics = learner.update(batches(1)[0])
    assert metrics["learner/updates"] == 1 and metrics["learner/update_applied"] == 1.0
    assert all(np.isfinite(v) for v in metrics.values())
    assert {"learner/image_loss", "learner/reward_loss", "learner/kl_loss", "learner/grad_norm"} <= set(metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, params(learner)))


def test_state_dict_round_trip_continues_identically():
    data = batches(4)
    a = Learner(CFG, 2, seed=0)
    for batch in data[:2]:
        a.update(batch)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = Learner(CFG, 2, seed=123)  # different init and noise: everything must come from the checkpoint
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in data[2:]:
        ma, mb = a.update(batch), b.update(batch)
        assert ma["learner/total_loss"] == mb["learner/total_loss"]
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    assert (a.updates, b.updates) == (4, 4)


def test_non_finite_loss_is_skipped_and_reported():
    learner = Learner(CFG, 2, seed=0)
    batch = batches(1)[0]
    batch["rewards"][0, 2] = np.nan
    before = params(learner)
    metrics = learner.update(batch)
    assert metrics["learner/update_applied"] == 0.0 and metrics["learner/skipped_updates"] == 1
    assert metrics["learner/updates"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, params(learner)))
    assert learner.update(batches(1)[0])["learner/updates"] == 1


@pytest.mark.parametrize("key, value, match", [
    ("observations", np.zeros((3, 5, 32, 32, 3), np.uint8), r"\(B, L, 64, 64, 3\) uint8"),
    ("observations", np.zeros((3, 5, 64, 64, 3), np.float32), "uint8"),
    ("actions", np.zeros((3, 5, 3), np.float32), r"\(3, 5, 2\)"),
    ("rewards", np.zeros((3, 4), np.float32), "rewards"),
])
def test_bad_batch_shapes_are_named(key, value, match):
    batch = batches(1)[0]
    batch[key] = value
    with pytest.raises(ValueError, match=match):
        Learner(CFG, 2).update(batch)


def test_missing_batch_key():
    batch = batches(1)[0]
    del batch["rewards"]
    with pytest.raises(KeyError, match="rewards"):
        Learner(CFG, 2).update(batch)


def test_discrete_actions_are_one_hot():
    learner = Learner(CFG, 5, discrete=True)
    batch = batches(1)[0]
    batch["actions"] = np.random.default_rng(0).integers(0, 5, (3, 5))
    assert learner.update(batch)["learner/update_applied"] == 1.0


def test_bfloat16_precision_trains():
    learner = Learner(CFG, 2, precision="bfloat16")
    metrics = [learner.update(b) for b in batches(3)]
    assert all(m["learner/update_applied"] == 1.0 for m in metrics)
    with pytest.raises(ValueError, match="precision"):
        Learner(CFG, 2, precision="float8")


def test_weights_are_cpu_tensors_of_the_model():
    learner = Learner(CFG, 2)
    weights = learner.weights()
    assert set(weights) == set(learner.model.state_dict()) and all(w.device.type == "cpu" for w in weights.values())


@pytest.mark.slow
def test_compiled_loss_matches_eager():
    """torch.compile of the loss (train.compile) traces without graph breaks and computes the same updates."""
    data = batches(3)
    eager = Learner(CFG, 2, seed=0, precision="float32")
    compiled = Learner(CFG, 2, seed=0, precision="float32", compile=True)
    for batch in data:
        a, b = eager.update(batch), compiled.update(batch)
        assert b["learner/total_loss"] == pytest.approx(a["learner/total_loss"], rel=1e-4)
