"""Open-loop prediction of an episode: filter a few real frames, then imagine the rest from actions alone.

Reports and evaluation videos show it: truth above model, frame by frame.
"""

from __future__ import annotations

import numpy as np
import torch

from common.envs.preprocess import postprocess_observation, preprocess_observation
from common.episode import Episode
from learner.world_model import WorldModel, one_hot_actions


def predict_episode(model: WorldModel, episode: Episode, *, context: int = 5, horizon: int = 50,
                    bit_depth: int = 5, generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted), each (P, H, W, 3) uint8: frames o_C .. o_{C+P-1} and the model's open-loop guesses.

    The model observes o_0 .. o_{C-1} (o_0 after a zero action, o_t after a_{t-1}), then imagines
    P = min(horizon, T + 1 - C) steps under the episode's actions a_{C-1} .. a_{C+P-2}.
    """
    steps = episode.length
    if not 1 <= context <= steps:
        raise ValueError(f"context {context} must be in 1..T={steps} for this episode")
    predict = min(horizon, steps + 1 - context)
    device = next(model.parameters()).device
    actions = torch.as_tensor(episode.actions, device=device)
    actions = one_hot_actions(actions, model.action_size) if episode.discrete else actions.float()
    a_tm1 = torch.cat([torch.zeros_like(actions[:1]), actions])[:, None]  # (T+1, 1, A): a_{-1}=0, a_0 .. a_{T-1}
    frames = torch.as_tensor(episode.observations[:context + predict], device=device)
    frames = frames.permute(0, 3, 1, 2)[:, None]  # (C+P, H, W, 3) -> (C+P, 1, 3, H, W)
    observed = preprocess_observation(frames[:context], bit_depth, noise=False)
    model.eval()
    _, predicted = model.open_loop(observed, a_tm1[:context], a_tm1[context:context + predict], generator)
    predicted = postprocess_observation(predicted[:, 0], bit_depth).permute(0, 2, 3, 1)  # (P, 3, H, W) -> (P, H, W, 3)
    truth = episode.observations[context:context + predict]
    return truth, predicted.cpu().numpy()
