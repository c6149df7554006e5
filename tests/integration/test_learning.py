"""Learning sanity: the RSSM learns an action-driven pixel task well enough to predict it open loop."""

import pytest
import torch

from common.config import load_config
from common.envs.preprocess import preprocess_observation
from learner.learner import Learner
from tests.synthetic import moving_square

CONTEXT = 4


def open_loop_errors(learner: Learner, chunks: dict) -> tuple[float, float]:
    """(model, copy-last-frame) mean squared error of the frames after CONTEXT observed ones."""
    frames = preprocess_observation(torch.as_tensor(chunks["observations"]).permute(1, 0, 4, 2, 3), 5, noise=False)
    actions = torch.as_tensor(chunks["actions"]).transpose(0, 1)  # (B, L, A) -> (L, B, A)
    _, predicted = learner.model.open_loop(frames[:CONTEXT], actions[:CONTEXT], actions[CONTEXT:],
                                           torch.Generator().manual_seed(0))
    truth = frames[CONTEXT:]
    return float(((predicted - truth) ** 2).mean()), float(((frames[CONTEXT - 1] - truth) ** 2).mean())


@pytest.mark.slow
def test_rssm_open_loop_prediction_beats_copying_the_last_frame():
    torch.set_num_threads(2)
    cfg = load_config("debug", ["model.cnn_depth=8", "model.deter_size=64", "model.stoch_size=8",
                                "model.hidden_size=64", "train.learning_rate=3e-3", "loss.free_nats=1.0"])
    learner = Learner(cfg, action_size=2, seed=0)
    held_out = moving_square(32, 12, seed=10_000)
    untrained, baseline = open_loop_errors(learner, held_out)
    for i in range(800):
        learner.update(moving_square(16, 12, seed=i))
    trained, _ = open_loop_errors(learner, held_out)
    assert trained < 0.5 * baseline, f"open-loop MSE {trained:.4f} vs copy-last-frame {baseline:.4f}"
    assert trained < 0.5 * untrained
