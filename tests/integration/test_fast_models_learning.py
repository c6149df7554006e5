"""Learning sanity for Buesing et al.'s families: each predicts the moving square open loop better than
copying the last observed frame (the rssm's version of this test is test_learning.py).

The sssm trains on the ELBO with latent overshooting (PlaNet's remedy for weaker models): on the
plain one-step ELBO its prior does not learn to move the square by less than one 8-pixel cell of
its state map within these updates (jumps of 2 steps it learns either way)."""

import pytest
import torch

from common.config import load_config
from common.envs.preprocess import preprocess_observation
from learner.learner import Learner
from tests.synthetic import moving_square

CONTEXT, LENGTH = 4, 12


def open_loop_errors(learner: Learner, chunks: dict) -> tuple[float, float]:
    """(model, copy-last-frame) mean squared error of the frames the model predicts after CONTEXT observed ones.

    A jumpy model predicts the frame at the end of each jump only: both errors are taken there.
    """
    frames = preprocess_observation(torch.as_tensor(chunks["observations"]).permute(1, 0, 4, 2, 3), 5, noise=False)
    actions = torch.as_tensor(chunks["actions"]).transpose(0, 1)  # (B, L, A) -> (L, B, A)
    _, predicted = learner.model.open_loop(frames[:CONTEXT], actions[:CONTEXT], actions[CONTEXT:],
                                           torch.Generator().manual_seed(0))
    jump = learner.model.jump
    scored = [k for k in range(LENGTH - CONTEXT) if (k + 1) % jump == 0]
    truth = frames[CONTEXT:][scored]
    return float(((predicted[scored] - truth) ** 2).mean()), float(((frames[CONTEXT - 1] - truth) ** 2).mean())


@pytest.mark.slow
@pytest.mark.parametrize("family, jump, overrides", [
    ("ar", 1, []),
    ("dssm", 1, []),
    ("sssm", 1, ["loss.overshooting_distance=4"]),
    ("sssm", 2, ["loss.overshooting_distance=3"]),
])
def test_open_loop_prediction_beats_copying_the_last_frame(family, jump, overrides, updates=400):
    torch.set_num_threads(2)
    cfg = load_config("debug", [f"model.family={family}", f"model.jump={jump}", "model.cnn_depth=8",
                                "model.state_channels=16", "model.latent_channels=4", "model.hidden_size=64",
                                "train.learning_rate=3e-3", "loss.free_nats=1.0", f"train.chunk_length={LENGTH}",
                                *overrides])
    learner = Learner(cfg, action_size=2, seed=0, precision="float32")
    held_out = moving_square(32, LENGTH, seed=10_000)
    untrained, baseline = open_loop_errors(learner, held_out)
    for i in range(updates):
        learner.update(moving_square(16, LENGTH, seed=i))
    trained, _ = open_loop_errors(learner, held_out)
    assert trained < 0.5 * baseline, f"open-loop MSE {trained:.4f} vs copy-last-frame {baseline:.4f}"
    assert trained < 0.5 * untrained
