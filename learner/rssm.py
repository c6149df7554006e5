"""PlaNet's recurrent state-space model and its two ablations behind one interface.

Families (``model.family``):

- ``rssm``: h_t = GRU(h_tm1, f(s_tm1, a_tm1)); prior p(s_t | h_t); posterior q(s_t | h_t, e_t).
- ``deterministic``: the same path without noise: s_t is the mean of prior or posterior, and
  std is fixed at 1, so KL(q || p) is half the squared distance of the means. A model that
  cannot represent several futures, PlaNet's "deterministic (RNN)" ablation.
- ``stochastic``: no GRU (D = 0): c_t = f(s_tm1, a_tm1); prior p(s_t | c_t); posterior
  q(s_t | c_t, e_t). PlaNet's "stochastic (SSM)" ablation.

Tensors are time-major: (T, B, .).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learner.networks import GRUCell, mlp
from learner.state import State

FAMILIES = ("rssm", "deterministic", "stochastic")


class RSSM(nn.Module):
    def __init__(self, family: str, action_size: int, embed_size: int, deter_size: int = 200, stoch_size: int = 30,
                 hidden_size: int = 200, min_std: float = 0.1):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"RSSM family {family!r} is unknown; choose one of {', '.join(FAMILIES)}")
        self.family, self.min_std = family, min_std
        self.deter_size = 0 if family == "stochastic" else deter_size
        self.stoch_size = stoch_size
        self.feature_size = self.deter_size + stoch_size
        self.inputs = nn.Sequential(nn.Linear(stoch_size + action_size, hidden_size), nn.ReLU())  # f(s_tm1, a_tm1)
        self.cell = GRUCell(hidden_size, deter_size) if self.deter_size else None
        context = self.deter_size or hidden_size
        self.prior_net = mlp(context, hidden_size, 2 * stoch_size, layers=1)
        self.posterior_net = mlp(context + embed_size, hidden_size, 2 * stoch_size, layers=1)

    def initial(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> State:
        """The state before the first action: zeros, with a unit std."""
        zeros = lambda size: torch.zeros(batch, size, device=device, dtype=dtype)  # noqa: E731
        return State(zeros(self.deter_size), zeros(self.stoch_size), zeros(self.stoch_size),
                     torch.ones(batch, self.stoch_size, device=device, dtype=dtype))

    # ------------------------------------------------------------ one step

    def step(self, state: State, action: torch.Tensor, embed: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[State, State | None]:
        """One transition from (h_tm1, s_tm1) under a_tm1: the prior at t, and the posterior at t given e_t.

        state: batch (N,); action: (N, A); embed: (N, E) or None (then no posterior).
        """
        context = self._context(state, action)
        prior = self._state(context, self.prior_net(context), generator)
        if embed is None:
            return prior, None
        posterior = self._state(context, self.posterior_net(torch.cat([context, embed], -1)), generator)
        return prior, posterior

    def _context(self, state: State, action: torch.Tensor) -> torch.Tensor:
        """h_t = GRU(h_tm1, f(s_tm1, a_tm1)) for families with a deterministic path, else f(s_tm1, a_tm1)."""
        x = self.inputs(torch.cat([state.stoch, action], -1))
        return self.cell(x, state.deter) if self.cell is not None else x

    def _state(self, context: torch.Tensor, stats: torch.Tensor, generator: torch.Generator | None) -> State:
        mean, raw_std = stats.float().chunk(2, -1)
        deter = context if self.deter_size else context[..., :0]
        if self.family == "deterministic":
            return State(deter, mean, mean, torch.ones_like(mean))
        std = F.softplus(raw_std.contiguous()) + self.min_std  # softplus on a chunk() view is ~10x slower
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return State(deter, mean + std * noise, mean, std)

    # ------------------------------------------------------------ rollouts

    def observe(self, embeds: torch.Tensor, actions: torch.Tensor, state: State | None = None,
                generator: torch.Generator | None = None) -> tuple[State, State]:
        """Posterior (filtering) rollout over T steps; returns (posterior, prior), each with batch (T, B).

        Timing: the action at index t is the one taken *before* the observation at index t::

            state    (h, s)_{-1} --a[0]--> (h, s)_0 --a[1]--> (h, s)_1 ... --a[T-1]--> (h, s)_{T-1}
            inputs                          e[0]               e[1]                     e[T-1]

        embeds: (T, B, E) = e_0..e_{T-1}; actions: (T, B, A) = a_{-1}..a_{T-2} (the a_tm1 of each e_t);
        state: the state before the first step (zeros when None). posterior[t] is q(s_t | h_t, e_t),
        prior[t] is p(s_t | h_t), both after actions[t].
        """
        if embeds.shape[:2] != actions.shape[:2]:
            raise ValueError(f"observe: embeds {tuple(embeds.shape)} and actions {tuple(actions.shape)} must share (T, B)")
        state = state or self.initial(embeds.shape[1], embeds.device)
        priors, posteriors = [], []
        for embed, action in zip(embeds, actions):
            prior, state = self.step(state, action, embed, generator)
            priors.append(prior)
            posteriors.append(state)
        return State.stack(posteriors), State.stack(priors)

    def imagine_features(self, actions: torch.Tensor, state: State,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """``imagine(actions, state).features`` (T, B, D + Z) without gathering means and stds: the planning path."""
        features = torch.empty(*actions.shape[:2], self.feature_size, device=actions.device, dtype=state.stoch.dtype)
        for t, action in enumerate(actions):
            state, _ = self.step(state, action, None, generator)
            features[t, :, :self.deter_size] = state.deter
            features[t, :, self.deter_size:] = state.stoch
        return features

    def imagine(self, actions: torch.Tensor, state: State, generator: torch.Generator | None = None) -> State:
        """Prior rollout: the states reached after each action, batch (T, B).

        Timing: from the state at t (a posterior, usually), actions[k] leads to the state at t+1+k::

            state (h, s)_t --a[0]--> prior_{t+1} --a[1]--> prior_{t+2} ... --a[T-1]--> prior_{t+T}

        actions: (T, B, A); state: batch (B,).
        """
        priors = []
        for action in actions:
            state, _ = self.step(state, action, None, generator)
            priors.append(state)
        return State.stack(priors)
