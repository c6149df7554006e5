"""PlaNet's objective as pure functions: each returns loss terms and metrics, scales come from config.

Negative ELBO per chunk (PAPERS.md), averaged over batch and time:

    image   0.5 * ||o_t - dec(h_t, s_t)||^2          (unit-variance Gaussian, constants dropped; over a random
                                                      share loss.image_fraction of the frames when below 1)
    reward  0.5 * (r_t - rew(h_t, s_t))^2
    kl      max(free_nats, KL(q(s_t | h_t, e_t) || p(s_t | h_t)))   summed over Z
            or, with latent overshooting over distances 1..D, (1/D) sum_d beta_d mean_t max(free, KL_d)
    global_kl  KL(q(s_t | h_t, e_t) || N(0, I))
"""

from __future__ import annotations

import torch

from common.config import LossConfig
from learner.rssm import RSSM
from learner.state import State
from learner.world_model import WorldModel


def gaussian_kl(q_mean: torch.Tensor, q_std: torch.Tensor, p_mean: torch.Tensor, p_std: torch.Tensor) -> torch.Tensor:
    """KL(N(q_mean, q_std^2) || N(p_mean, p_std^2)) for diagonal Gaussians, summed over the last dim."""
    var_ratio = (q_std / p_std) ** 2
    distance = ((q_mean - p_mean) / p_std) ** 2
    return 0.5 * (var_ratio + distance - 1.0 - torch.log(var_ratio)).sum(-1)


def free_nats_kl(posterior: State, prior: State, free_nats: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of max(free_nats, KL), mean raw KL) over the batch dims of the two states."""
    kl = gaussian_kl(posterior.mean, posterior.std, prior.mean, prior.std)
    return torch.clamp(kl, min=free_nats).mean(), kl.mean()


def image_nll(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-ln N(target; predicted, I) up to a constant, summed over (3, 64, 64), averaged over the rest."""
    return 0.5 * ((predicted - target) ** 2).sum((-3, -2, -1)).mean()


def decoded_image_nll(model: WorldModel, posterior: State, observations: torch.Tensor, fraction: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`image_nll` of the posterior's decoded frames, over a random ``fraction`` of the T x B frames.

    Decoding a subset drawn uniformly without replacement (at least one frame) keeps the mean unbiased:
    its expectation is the mean over all frames; fraction 1 decodes every frame, as PlaNet does.
    """
    if fraction >= 1.0:
        return image_nll(model.decode(posterior), observations.float())
    frames = posterior.flatten()  # (T, B, .) -> (T*B, .)
    total = frames.batch_shape[0]
    keep = max(1, round(fraction * total))
    chosen = torch.rand(total, generator=generator, device=observations.device).argsort()[:keep]
    return image_nll(model.decode(frames[chosen]), observations.flatten(0, 1)[chosen].float())


def reward_nll(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-ln N(target; predicted, 1) up to a constant, averaged."""
    return 0.5 * ((predicted - target) ** 2).mean()


def overshooting_kl(rssm: RSSM, posterior: State, initial: State, actions: torch.Tensor, distance: int,
                    beta: float, free_nats: float, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Latent overshooting, one batched pass over all T start points per distance (no loop over starts).

    Start i (i = 0..T-1) is the state at time i-1: ``initial`` for i = 0, posterior[i-1] after.
    At distance d the prior is rolled d steps from every start at once, with the true actions, and
    compared to posterior[i-1+d] where that exists (T-d+1 valid starts). Targets are held fixed
    (no gradient) for d >= 2; d = 1 is exactly the one-step KL of the standard objective, so D = 1
    equals it. Returns ((1/D) sum_d beta_d mean_valid max(free_nats, KL_d), metrics), beta_1 = 1.

    posterior: batch (T, B); initial: batch (B,); actions: (T, B, A), actions[t] leads into time t.
    """
    steps = actions.shape[0]
    if not 1 <= distance <= steps:
        raise ValueError(f"overshooting distance {distance} must be in 1..T={steps}")
    starts = State.cat([initial.map(lambda x: x[None]), posterior[:-1]])  # (T, B, .): times -1..T-2
    state = starts.flatten()  # (T, B, .) -> (T*B, .)
    batch = actions.shape[1]
    index = torch.arange(steps, device=actions.device)
    total, metrics = actions.new_zeros(()), {}
    for d in range(1, distance + 1):
        valid = steps - d + 1  # starts 0..T-d reach a time with a posterior
        shifted = torch.zeros_like(actions)
        shifted[:valid] = actions[d - 1:]  # action leading from time i-2+d into i-1+d, for start i
        state, _ = rssm.step(state, shifted.flatten(0, 1), None, generator)
        prior = state.map(lambda x: x.reshape(steps, batch, -1))  # (T*B, .) -> (T, B, .)
        target = posterior if d == 1 else posterior.detach()
        target_mean = torch.zeros_like(prior.mean)
        target_std = torch.ones_like(prior.std)
        target_mean[:valid], target_std[:valid] = target.mean[d - 1:], target.std[d - 1:]
        kl = gaussian_kl(target_mean, target_std, prior.mean, prior.std)  # (T, B)
        mask = (index < valid).to(kl.dtype)[:, None]
        term = (torch.clamp(kl, min=free_nats) * mask).sum() / (mask.sum() * batch)
        total = total + (1.0 if d == 1 else beta) * term
        metrics[f"learner/overshooting_kl_d{d}"] = (kl.detach() * mask).sum() / (mask.sum() * batch)
    return total / distance, metrics


def loss_scales(cfg: LossConfig) -> dict[str, float]:
    """The weight of every loss term; its keys must equal the terms' keys."""
    return {"image": cfg.image_scale, "reward": cfg.reward_scale, "kl": cfg.kl_scale,
            "global_kl": cfg.global_kl_scale}


def weighted_total(terms: dict[str, torch.Tensor], scales: dict[str, float]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum(scale * term) and its metrics (``learner/<name>_loss`` per term, ``learner/total_loss``).

    The keys of ``terms`` and ``scales`` must be equal: a term without a scale, or the reverse, is a bug.
    """
    assert set(terms) == set(scales), f"loss terms {sorted(terms)} and scales {sorted(scales)} differ"
    total = sum(scales[name] * value for name, value in terms.items())
    metrics = {f"learner/{name}_loss": value.detach() for name, value in terms.items()}
    metrics["learner/total_loss"] = total.detach()
    return total, metrics


def world_model_loss(model: WorldModel, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                     cfg: LossConfig, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(total, terms, metrics) for one chunk batch, time-major; metrics are detached scalar tensors.

    observations: (T, B, 3, 64, 64) preprocessed o_t; actions: (T, B, A) a_tm1 of each o_t;
    rewards: (T, B), rewards[t] received with the step into o_t (it follows actions[t]).
    """
    steps, batch = observations.shape[:2]
    assert actions.shape[:2] == (steps, batch) and rewards.shape == (steps, batch), \
        f"(T, B) mismatch: observations {tuple(observations.shape)}, actions {tuple(actions.shape)}, " \
        f"rewards {tuple(rewards.shape)}"
    initial = model.rssm.initial(batch, observations.device)
    posterior, prior = model.observe(observations, actions, initial, generator)
    one_step_kl, raw_kl = free_nats_kl(posterior, prior, cfg.free_nats)
    metrics: dict[str, torch.Tensor] = {"learner/kl": raw_kl.detach()}
    if cfg.overshooting_distance:
        kl, overshooting = overshooting_kl(model.rssm, posterior, initial, actions, cfg.overshooting_distance,
                                           cfg.overshooting_kl_scale, cfg.free_nats, generator)
        metrics.update(overshooting)
    else:
        kl = one_step_kl
    zeros = torch.zeros_like(posterior.mean)
    terms = {
        "image": decoded_image_nll(model, posterior, observations, cfg.image_fraction, generator),
        "reward": reward_nll(model.predict_reward(posterior), rewards.float()),
        "kl": kl,
        "global_kl": gaussian_kl(posterior.mean, posterior.std, zeros, torch.ones_like(zeros)).mean(),
    }
    total, term_metrics = weighted_total(terms, loss_scales(cfg))
    metrics.update(term_metrics)
    metrics["learner/prior_std"] = prior.std.detach().mean()
    metrics["learner/posterior_std"] = posterior.std.detach().mean()
    return total, terms, metrics
