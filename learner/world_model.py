"""The world model: encoder, latent dynamics, image decoder and reward head, used by learner and actors.

Observations enter preprocessed (common.envs.preprocess: float in [-0.5, 0.5)), channels first:
(T, B, 3, 64, 64). Actions are float vectors (T, B, A); discrete actions are one-hot (see
:func:`one_hot_actions`).

:meth:`WorldModel.from_config` builds every family ``model.family`` names: PlaNet's rssm,
deterministic and stochastic (vector states, learner/rssm.py) and Buesing et al.'s dssm and sssm
(spatial states, learner/ssm.py) as a WorldModel; the pixel-space ar baseline as an
:class:`~learner.autoregressive.AutoregressiveModel`; and with ``model.jump`` j > 1 either of them
inside a :class:`~learner.jumpy.JumpyModel`. All of them offer what learner, actors and planner use:
``action_size``, ``jump``, ``rssm.initial``, ``observe_step``, ``imagine_rewards``, ``imagine_frames``,
``decode`` and ``open_loop``.
"""

from __future__ import annotations

import torch
from torch import nn

from common.config import Config, derive
from learner.autoregressive import AutoregressiveModel
from learner.jumpy import JumpyModel
from learner.networks import Decoder, Encoder, mlp
from learner.rssm import RSSM
from learner.spatial import SpatialDecoder, SpatialEncoder, SpatialRewardHead
from learner.ssm import FAMILIES as SPATIAL_FAMILIES
from learner.ssm import ConvSSM
from learner.state import State


class WorldModel(nn.Module):
    jump = 1
    """Agent steps per transition; a jumpy model is a :class:`JumpyModel` around a WorldModel."""

    def __init__(self, family: str, action_size: int, *, deter_size: int = 200, stoch_size: int = 30,
                 hidden_size: int = 200, cnn_depth: int = 32, min_std: float = 0.1, state_channels: int = 32,
                 latent_channels: int = 8):
        super().__init__()
        self.action_size = action_size
        if family in SPATIAL_FAMILIES:  # states are (C, 8, 8) maps, flattened in State
            self.encoder = SpatialEncoder(cnn_depth)
            self.rssm = ConvSSM(family, action_size, self.encoder.channels, state_channels, latent_channels, min_std)
            self.decoder = SpatialDecoder(self.rssm.channels, cnn_depth)
            self.reward = SpatialRewardHead(self.rssm.channels, hidden_size)
        else:
            self.encoder = Encoder(cnn_depth)
            self.rssm = RSSM(family, action_size, self.encoder.embed_size, deter_size, stoch_size, hidden_size,
                             min_std)
            self.decoder = Decoder(self.rssm.feature_size, cnn_depth)
            self.reward = mlp(self.rssm.feature_size, hidden_size, 1, layers=2)

    @classmethod
    def from_config(cls, cfg: Config, action_size: int) -> WorldModel | AutoregressiveModel | JumpyModel:
        """The model of ``model.family`` for actions of size A (the one-hot size when discrete), jumpy when j > 1.

        A jumpy model's inner model takes the j actions of a jump concatenated, size j A.
        """
        m = cfg.model
        inner_actions = m.jump * action_size
        if m.family == "ar":
            model = AutoregressiveModel(inner_actions, hidden_size=m.hidden_size, cnn_depth=m.cnn_depth,
                                        state_channels=m.state_channels, latent_channels=m.latent_channels)
        else:
            model = cls(m.family, inner_actions, deter_size=m.deter_size, stoch_size=m.stoch_size,
                        hidden_size=m.hidden_size, cnn_depth=m.cnn_depth, min_std=m.min_std,
                        state_channels=m.state_channels, latent_channels=m.latent_channels)
            assert m.family in SPATIAL_FAMILIES or model.encoder.embed_size == derive(cfg).embed_size
        return JumpyModel(model, m.jump, action_size) if m.jump > 1 else model

    def predict_reward(self, state: State) -> torch.Tensor:
        """Mean of p(r | h, s), batch shape of ``state``."""
        return self.reward(state.features).squeeze(-1).float()

    def decode(self, state: State) -> torch.Tensor:
        """Mean of p(o | h, s): (..., 3, 64, 64) in preprocessed units."""
        return self.decoder(state.features).float()

    def observe(self, observations: torch.Tensor, actions: torch.Tensor, state: State | None = None,
                generator: torch.Generator | None = None) -> tuple[State, State]:
        """Encode (T, B, 3, 64, 64) frames and filter them; see :meth:`RSSM.observe` for the timing."""
        return self.rssm.observe(self.encoder(observations), actions, state, generator)

    def observe_step(self, state: State, action: torch.Tensor, observation: torch.Tensor,
                     generator: torch.Generator | None = None) -> State:
        """The actor's belief update: posterior at t from the state at t-1, a_tm1 (B, A) and o_t (B, 3, 64, 64)."""
        _, posterior = self.rssm.step(state, action, self.encoder(observation), generator)
        return posterior

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        """Predicted rewards (H, N) of prior rollouts from ``state`` (batch N) under actions (H, N, A).

        The reward head runs once over all H * N imagined states rather than once per step.
        """
        return self.reward(self.rssm.imagine_features(actions, state)).squeeze(-1).float()

    def imagine_frames(self, state: State, actions: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Decoded prior rollout: frames (H, N, 3, 64, 64), frames[k] the state after actions[k] (H, N, A)."""
        return self.decode(self.rssm.imagine(actions, state, generator))

    @torch.no_grad()
    def open_loop(self, context: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Open-loop prediction: filter C context frames, then imagine P steps and decode them.

        context: (C, B, 3, 64, 64) frames o_0..o_{C-1}; context_actions: (C, B, A) their a_tm1;
        actions: (P, B, A), the actions after o_{C-1}. Returns (reconstructions (C, B, 3, 64, 64),
        predictions (P, B, 3, 64, 64)) in preprocessed units; predictions[k] is o_{C+k} as imagined.
        """
        posterior, _ = self.observe(context, context_actions, generator=generator)
        return self.decode(posterior), self.imagine_frames(posterior[-1], actions, generator)


def one_hot_actions(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Discrete action indices (...) int64 -> one-hot float (..., n), the form the model takes."""
    return torch.nn.functional.one_hot(actions.long(), num_actions).float()
