"""The loss of every model family, as pure functions returning ``(total, terms, metrics)``.

- rssm, deterministic, stochastic, sssm: :func:`learner.losses.world_model_loss`, the negative
  ELBO (image and reward log-likelihood of the posterior states, KL(q || p) with free nats, optional
  latent overshooting).
- dssm: :func:`open_loop_loss`, Buesing et al.'s objective for a deterministic SSM: the likelihood
  of frames predicted open loop from a state inferred from a few context frames, plus the
  reconstruction of the filtered frames (actors filter every step, so the filter is trained on
  the whole chunk). A KL has nothing to measure here: without noise, a posterior can carry any
  information in differences too small for the squared distance of means to charge.
- ar: :func:`autoregressive_loss`, the image and reward log-likelihood of one-step predictions from
  the true previous frames (teacher forcing); there is no latent state and no KL.
- a jumpy model: the chunk is packed into jumps of j agent steps (:func:`learner.jumpy.pack_jumps`),
  then its inner model's loss applies to the packed chunk.

Inputs are time-major as in world_model_loss: observations (T, B, 3, 64, 64), actions (T, B, A)
a_tm1, rewards (T, B) r_tm1.
"""

from __future__ import annotations

import torch
from torch import nn

from common.config import LossConfig
from learner.autoregressive import AutoregressiveModel
from learner.jumpy import JumpyModel, pack_jumps
from learner.losses import image_nll, reward_nll, weighted_total, world_model_loss
from learner.state import State
from learner.world_model import WorldModel

CONTEXT = 3
"""Frames a dssm filters before predicting the rest of a chunk open loop (Buesing et al. start from a few)."""


def autoregressive_scales(cfg: LossConfig) -> dict[str, float]:
    """The weight of every term of :func:`autoregressive_loss`; its keys must equal the terms' keys."""
    return {"image": cfg.image_scale, "reward": cfg.reward_scale}


def autoregressive_loss(model: AutoregressiveModel, observations: torch.Tensor, actions: torch.Tensor,
                        rewards: torch.Tensor, cfg: LossConfig, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(total, terms, metrics): negative log-likelihood of o_t and r_t predicted from o_{t-1}, o_{t-2}, a_tm1.

    Steps t >= 1 count (o_0 has no observed frame before it in the chunk). ``generator`` is unused:
    the model draws nothing.
    """
    steps, batch = observations.shape[:2]
    assert steps >= 2 and actions.shape[:2] == (steps, batch) and rewards.shape == (steps, batch), \
        f"(T >= 2, B) mismatch: observations {tuple(observations.shape)}, actions {tuple(actions.shape)}, " \
        f"rewards {tuple(rewards.shape)}"
    frames, predicted_rewards = model.teacher_forced(observations, actions)
    terms = {"image": image_nll(frames[1:], observations[1:].float()),
             "reward": reward_nll(predicted_rewards[1:], rewards[1:].float())}
    total, metrics = weighted_total(terms, autoregressive_scales(cfg))
    return total, terms, metrics


def open_loop_scales(cfg: LossConfig) -> dict[str, float]:
    """The weight of every term of :func:`open_loop_loss`; its keys must equal the terms' keys."""
    return {"image": cfg.image_scale, "prediction": cfg.image_scale, "reward": cfg.reward_scale}


def open_loop_loss(model: WorldModel, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                   cfg: LossConfig, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(total, terms, metrics) of a dssm: reconstruction of the filtered chunk, likelihood of its open-loop prediction.

    Timing, C = min(CONTEXT, T - 1): the posterior filters all T frames; from the filtered state at
    C-1 the transition alone predicts the frames after it::

        filtered   s_0 .. s_{C-1} .. s_{T-1}          observe(o_0..o_{T-1}, a[0..T-1])    -> "image"
        predicted         s_{C-1} --a[C]--> s'_C .. --a[T-1]--> s'_{T-1}                 -> "prediction"

    Rewards are scored on both paths. Terms are per frame, as in world_model_loss.
    """
    steps, batch = observations.shape[:2]
    assert steps >= 2 and actions.shape[:2] == (steps, batch) and rewards.shape == (steps, batch), \
        f"(T >= 2, B) mismatch: observations {tuple(observations.shape)}, actions {tuple(actions.shape)}, " \
        f"rewards {tuple(rewards.shape)}"
    context = min(CONTEXT, steps - 1)
    posterior, _ = model.observe(observations, actions, None, generator)
    predicted = model.rssm.imagine(actions[context:], posterior[context - 1], generator)  # (T - C, B)
    rewards = rewards.float()
    both = State.cat([posterior, predicted])  # (2T - C, B): one decoder call for both paths
    frames = model.decode(both)
    terms = {"image": image_nll(frames[:steps], observations.float()),
             "prediction": image_nll(frames[steps:], observations[context:].float()),
             "reward": reward_nll(model.predict_reward(both), torch.cat([rewards, rewards[context:]]))}
    total, metrics = weighted_total(terms, open_loop_scales(cfg))
    return total, terms, metrics


def model_loss(model: nn.Module, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               cfg: LossConfig, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The loss of ``model``'s family (see the module docstring) on one time-major chunk batch."""
    if isinstance(model, JumpyModel):
        return model_loss(model.inner, *pack_jumps(observations, actions, rewards, model.jump), cfg, generator)
    if isinstance(model, AutoregressiveModel):
        return autoregressive_loss(model, observations, actions, rewards, cfg, generator)
    if model.rssm.family == "dssm":
        return open_loop_loss(model, observations, actions, rewards, cfg, generator)
    return world_model_loss(model, observations, actions, rewards, cfg, generator)
