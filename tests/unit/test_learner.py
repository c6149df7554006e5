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


def test_a_checkpoint_of_another_device_kind_resumes_with_a_reseeded_generator():
    """A GPU run's checkpoint holds a CUDA generator's state (16 bytes), which a CPU generator cannot take."""
    a = Learner(CFG, 2, seed=0)
    a.update(batches(1)[0])
    state = a.state_dict()
    cuda_like = {**state, "generator": torch.zeros(16, dtype=torch.uint8)}  # a CUDA Philox seed + offset
    b = Learner(CFG, 2, seed=0)
    b.load_state_dict(cuda_like)
    assert b.updates == 1 and all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    c = Learner(CFG, 2, seed=0)
    c.load_state_dict(cuda_like)
    assert torch.equal(b.generator.get_state(), c.generator.get_state()), "reseeded from (seed, updates): the same"
    assert b.update(batches(1, seed=5)[0])["learner/total_loss"] == c.update(batches(1, seed=5)[0])["learner/total_loss"]
    assert b.updates == 2


def test_stage_gives_cpu_tensors_the_update_takes():
    learner = Learner(CFG, 2, seed=0)
    batch = batches(1)[0]
    staged = learner.stage(batch)
    assert all(torch.is_tensor(staged[key]) for key in ("observations", "actions", "rewards"))
    assert torch.equal(staged["observations"], torch.from_numpy(batch["observations"]))
    other = Learner(CFG, 2, seed=0)
    assert learner.update(staged)["learner/total_loss"] == other.update(batch)["learner/total_loss"]


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
    """torch.compile of the loss (train.compile) traces without graph breaks and computes the same updates.

    Compiled, latent samples come from torch's default generator (a Generator argument would break the
    graph at every step); inductor's fallback_random draws them exactly as eager ops do, so an eager
    learner sampling from the same generator must match update for update.
    """
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    data = batches(3)
    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        eager = Learner(CFG, 2, seed=0, precision="float32")
        eager.loss_generator = None  # sample as the compiled loss does
        compiled = Learner(CFG, 2, seed=0, precision="float32", compile=True)
        assert compiled.loss_generator is None
        for batch in data:
            torch.manual_seed(7)
            a = eager.update(batch)
            torch.manual_seed(7)
            b = compiled.update(batch)
            assert b["learner/total_loss"] == pytest.approx(a["learner/total_loss"], rel=1e-4)
    assert not counters["graph_break"], f"graph breaks in the compiled loss: {dict(counters['graph_break'])}"

