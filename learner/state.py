"""The latent state every world-model family shares, and the interface planners need.

A state holds the deterministic path h (D) and the stochastic one s (Z) with the
Gaussian that s was drawn from. Families without one of the paths carry it with
size 0, so one interface serves rssm, deterministic and stochastic models. Buesing
et al.'s families use the same fields: dssm/sssm keep their (C, 8, 8) maps s_t and
z_t flattened in deter and stoch (learner/ssm.py), the ar baseline keeps its last
frames in deter (learner/autoregressive.py), and a jumpy model's actor belief packs
j states and j-1 actions along the last dim (learner/jumpy.py). Every batch
dimension stays in front, so indexing, repeating and stacking work for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Protocol

import torch


@dataclass(frozen=True)
class State:
    deter: torch.Tensor
    """h_t, (..., D); size 0 for the stochastic-only family."""
    stoch: torch.Tensor
    """s_t, (..., Z): a sample (rssm, stochastic) or the mean (deterministic)."""
    mean: torch.Tensor
    """Mean of the Gaussian s_t came from, (..., Z)."""
    std: torch.Tensor
    """Std of that Gaussian, (..., Z)."""

    @property
    def features(self) -> torch.Tensor:
        """[h_t, s_t], (..., D + Z): what decoder, reward head and planner read."""
        return torch.cat([self.deter, self.stoch], -1)

    @property
    def batch_shape(self) -> torch.Size:
        return self.mean.shape[:-1]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
        """Apply ``fn`` to every field (indexing, reshaping, detaching, moving)."""
        return State(*(fn(getattr(self, name)) for name in _FIELDS))

    def __getitem__(self, index) -> State:
        return self.map(lambda x: x[index])

    def detach(self) -> State:
        return self.map(torch.Tensor.detach)

    def repeat(self, times: int) -> State:
        """(N, .) -> (N * times, .): each row repeated ``times`` times in a row (row n*times + j is row n)."""
        return self.map(lambda x: x.repeat_interleave(times, dim=0))

    def flatten(self) -> State:
        """Merge the two leading batch dimensions: (T, B, .) -> (T*B, .)."""
        return self.map(lambda x: x.flatten(0, 1))

    @staticmethod
    def stack(states: list[State], dim: int = 0) -> State:
        return State(*(torch.stack([getattr(s, name) for s in states], dim) for name in _FIELDS))

    @staticmethod
    def cat(states: list[State], dim: int = 0) -> State:
        return State(*(torch.cat([getattr(s, name) for s in states], dim) for name in _FIELDS))


_FIELDS = tuple(f.name for f in fields(State))
"""State's field names, read once: torch.compile traces a tuple of names, not dataclasses.fields of a class."""


class PlanningModel(Protocol):
    """What a planner needs from a world model."""

    action_size: int
    """A: size of one agent step's action vector (one-hot size for discrete actions)."""

    jump: int
    """j: agent steps one transition covers (Buesing et al.'s jumpy models); planners take a model without it as 1."""

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        """Predicted mean rewards (H, N) of rolling the prior from ``state`` (batch N) under ``actions`` (H, N, j A).

        Each row of ``actions`` is one transition: the j actions of a jump concatenated in time order
        (learner.jumpy.pack_actions), so H transitions cover H j agent steps. rewards[k] is the reward
        predicted for the state reached after actions[k], summed over its jump.
        """
        ...
