"""Buesing et al.'s state-space models with spatial states: the stochastic sSSM and the deterministic dSSM.

Families (``model.family``), with s_t an (C_s, S, S) map and z_t a (C_z, S, S) map (S = 8)::

    sssm   prior      z_t ~ p(z_t | s_tm1, a_tm1)
           posterior  z_t ~ q(z_t | s_tm1, a_tm1, e_t)
           transition s_t = g(s_tm1, z_t, a_tm1)
           decoder and reward head read (s_t, z_t)
    dssm   the same without noise: z_t is the mean of prior or posterior (std fixed at 1).

In imagination the dssm computes s_t = g(s_tm1, mu_p(s_tm1, a_tm1), a_tm1), a deterministic
function of (s_tm1, a_tm1): the paper's dSSM-DET transition. The paper infers a dSSM's state from
a few context frames with an initial-state encoder and never filters afterwards; an actor here
needs a belief it can update every step, so the observation enters through the posterior mean,
and filtering the first frames of a chunk plays the initial-state encoder's part in training
(learner.objectives.open_loop_loss: the dssm is trained on frames predicted open loop, not on a KL).

Networks (learner.spatial), all on (., S, S) maps. Prior, posterior and g share one trunk over
(s_tm1, a_tm1) with a pool-and-inject layer, so global information enters every step once::

    c_t          = trunk([s_tm1, tile(a_tm1)])                   conv, pool-and-inject, conv
    p(z_t | .)   = N(prior(c_t))                                 one conv to mean and std
    q(z_t | .)   = N(posterior([c_t, e_t]))                      two convs
    [u, v]       = update([c_t, z_t])                            two convs
    s_t          = (1 - sigmoid(u)) * s_tm1 + sigmoid(u) * tanh(v)

The gated update keeps a state rolled forward many steps bounded in [-1, 1] and lets it keep
what does not change.

Maps travel in :class:`State` flattened channel-major: deter = s_t (N, C_s S S), stoch = z_t
(N, C_z S S), mean and std those of z_t's Gaussian. Tensors are time-major (T, B, .) as in the RSSM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learner.rssm import RSSM
from learner.spatial import S, as_map, head, tile, trunk
from learner.state import State

FAMILIES = ("dssm", "sssm")


class ConvSSM(nn.Module):
    """The dynamics of dssm and sssm, with the RSSM's interface (``initial``, ``step``, ``observe``, ``imagine``).

    ``embed_channels``: E_c, channels of the encoder's (E_c, S, S) map; hidden conv width 2 C_s.
    """

    def __init__(self, family: str, action_size: int, embed_channels: int, state_channels: int = 32,
                 latent_channels: int = 8, min_std: float = 0.1):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"ConvSSM family {family!r} is unknown; choose one of {', '.join(FAMILIES)}")
        self.family, self.min_std = family, min_std
        self.embed_channels, self.state_channels, self.latent_channels = embed_channels, state_channels, latent_channels
        self.channels = state_channels + latent_channels
        """C_s + C_z: channels of the (s_t, z_t) map that decoder and reward head read."""
        self.deter_size = state_channels * S * S
        self.stoch_size = latent_channels * S * S
        self.feature_size = self.deter_size + self.stoch_size
        hidden = 2 * state_channels
        self.trunk = trunk(state_channels + action_size, hidden)
        self.prior_net = nn.Conv2d(hidden, 2 * latent_channels, 3, padding=1)
        self.posterior_net = head(hidden + embed_channels, hidden, 2 * latent_channels)
        self.update = head(hidden + latent_channels, hidden, 2 * state_channels)

    def step(self, state: State, action: torch.Tensor, embed: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[State, State | None]:
        """One transition from s_tm1 under a_tm1: the prior state at t, and the posterior one given e_t.

        state: batch (N,); action: (N, A); embed: (N, E_c S S) or None (then no posterior).
        Both returned states carry their own s_t = g(s_tm1, z_t, a_tm1), z_t drawn from their Gaussian.
        """
        s = as_map(state.deter, self.state_channels)  # (N, C_s S S) -> (N, C_s, S, S)
        context = self.trunk(torch.cat([s, tile(action).to(s.dtype)], 1))  # (N, C_s + A, S, S) -> (N, 2 C_s, S, S)
        prior = self._state(s, context, self.prior_net(context), generator)
        if embed is None:
            return prior, None
        e = as_map(embed, self.embed_channels).to(context.dtype)  # (N, E_c S S) -> (N, E_c, S, S)
        posterior = self._state(s, context, self.posterior_net(torch.cat([context, e], 1)), generator)
        return prior, posterior

    def _state(self, s: torch.Tensor, context: torch.Tensor, stats: torch.Tensor, generator: torch.Generator | None
               ) -> State:
        """z_t from the (N, 2 C_z, S, S) Gaussian statistics, then s_t = g(s_tm1, z_t, a_tm1) through c_t."""
        mean, raw_std = stats.float().flatten(1).chunk(2, -1)  # (N, 2 C_z, S, S) -> 2 x (N, C_z S S)
        if self.family == "dssm":
            std = torch.ones_like(mean)
            z = mean
        else:
            std = F.softplus(raw_std.contiguous()) + self.min_std
            z = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z_map = as_map(z, self.latent_channels).to(context.dtype)  # (N, C_z S S) -> (N, C_z, S, S)
        update, candidate = self.update(torch.cat([context, z_map], 1)).chunk(2, 1)  # 2 x (N, C_s, S, S)
        gate = torch.sigmoid(update)
        s_t = (1 - gate) * s + gate * torch.tanh(candidate)
        return State(s_t.flatten(1), z, mean, std)  # maps flattened back to (N, C S S)

    # The rollouts over T steps are the RSSM's own: they call only ``step`` and ``initial`` (read (h, s) in
    # their timing diagrams as (s, z) here). Borrowed, not copied, so that the two families cannot drift apart.
    initial = RSSM.initial  # zero maps with a unit std: the same flattened (N, size) state as the RSSM's
    observe = RSSM.observe
    imagine = RSSM.imagine
    imagine_features = RSSM.imagine_features
