"""Learning sanity: the RSSM learns an action-driven pixel task well enough to predict it open loop."""

import os

import numpy as np
import pytest
import torch

from common.config import load_config
from common.envs.preprocess import preprocess_observation
from common.episode import Episode, EpisodeInfo
from common.images import comparison_grid, write_png
from learner.learner import Learner
from learner.open_loop import predict_episode
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


def as_episode(chunks: dict, index: int) -> Episode:
    """Chunk ``index`` as an episode: frames[t] follows actions[t], so o_0 = frames[0] and a_0 = actions[1]."""
    length = chunks["rewards"].shape[1]
    info = EpisodeInfo(run="square", actor=0, seed=0, episode_id=f"square-{index}", policy_version=0,
                       task="synthetic", env_steps=length - 1)
    return Episode(chunks["observations"][index], chunks["actions"][index, 1:], chunks["rewards"][index, 1:],
                   np.zeros(length - 1, bool), info)


@pytest.mark.slow
def test_rssm_open_loop_prediction_beats_copying_the_last_frame(tmp_path):
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

    # The same through the report path: an Episode in, uint8 truth and prediction out.
    episode = as_episode(held_out, 0)
    truth, predicted = predict_episode(learner.model, episode, context=CONTEXT, horizon=8,
                                       generator=torch.Generator().manual_seed(0))
    assert truth.shape == predicted.shape == (8, 64, 64, 3) and predicted.dtype == np.uint8
    error = np.abs(truth.astype(np.float32) - predicted).mean()
    copy_error = np.abs(truth.astype(np.float32) - episode.observations[CONTEXT - 1]).mean()
    assert error < copy_error
    picture = comparison_grid([truth, predicted], count=8)
    path = write_png(os.environ.get("ORRERY_SAVE_OPEN_LOOP", tmp_path / "open_loop.png"), picture)
    assert path.read_bytes()[:4] == b"\x89PNG"
