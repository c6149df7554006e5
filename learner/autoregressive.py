"""The autoregressive pixel-space baseline (``model.family=ar``) of Buesing et al.'s comparison.

Every step goes through pixels: the previous K frames (K = 2) are encoded, the action applied, and
the next frame decoded, then fed back in::

    x_t = f(enc(o_tm1, o_tm2), a_tm1)          a (C_s + C_z, S, S) map; f a conv stack with pool-and-inject
    o_t ~ N(dec(x_t), I)      r_t ~ N(rew(x_t), 1)

Encoder, decoder and reward head are the spatial ones of dssm/sssm (learner.spatial), and x_t has
their state's channels, so the comparison isolates what the state-space models save: the encoder
and decoder at every imagined step.

The belief is the last K frames, observed or predicted: an actor's update needs no network at all,
but every imagined step (planning included) decodes a frame and encodes it again. Planning with it
works and is as slow as the paper says (and the planner's J candidates each carry K frames).
Trained by teacher forcing: each o_t is predicted from the true previous frames, all steps at once.

The belief travels in :class:`State` as deter = [o_tm1, ..., o_tmK] flattened (N, K * 3 * 64 * 64),
newest first; stoch, mean and std are empty.
"""

from __future__ import annotations

import torch
from torch import nn

from learner.spatial import SpatialDecoder, SpatialEncoder, SpatialRewardHead, as_map, tile, transition_net
from learner.state import State

FRAME = 3 * 64 * 64
"""Numbers in one (3, 64, 64) frame."""


class FrameHistory:
    """The ar belief: the last ``frames`` frames, newest first, as a :class:`State`. Holds no weights."""

    def __init__(self, frames: int):
        self.frames = frames

    def initial(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> State:
        """Zero frames (mid-grey in preprocessed units) before the first observation."""
        empty = torch.zeros(batch, 0, device=device, dtype=dtype)
        return State(torch.zeros(batch, self.frames * FRAME, device=device, dtype=dtype), empty, empty,
                     empty.clone())

    def push(self, state: State, frame: torch.Tensor) -> State:
        """The history after ``frame`` (N, 3, 64, 64): it becomes the newest, the oldest drops out."""
        deter = torch.cat([frame.reshape(frame.shape[0], FRAME).to(state.deter.dtype),
                           state.deter[:, :-FRAME]], -1)
        return State(deter, state.stoch, state.mean, state.std)

    def stacked(self, state: State) -> torch.Tensor:
        """(N, K * FRAME) -> (N, 3K, 64, 64): the frames stacked on the channels, newest first."""
        return state.deter.reshape(-1, 3 * self.frames, 64, 64)


class AutoregressiveModel(nn.Module):
    """ar: the same public interface as :class:`learner.world_model.WorldModel` (see its docstring)."""

    jump = 1
    """Agent steps per transition; a jumpy ar model is a :class:`learner.jumpy.JumpyModel` around one."""

    def __init__(self, action_size: int, *, hidden_size: int = 200, cnn_depth: int = 32, state_channels: int = 32,
                 latent_channels: int = 8, frames: int = 2):
        super().__init__()
        self.action_size = action_size
        self.rssm = FrameHistory(frames)
        """The belief's keeper, under the name every family's dynamics have (actors call ``rssm.initial``)."""
        self.encoder = SpatialEncoder(cnn_depth, in_channels=3 * frames)
        channels = state_channels + latent_channels
        self.transition = transition_net(self.encoder.channels + action_size, 2 * state_channels, channels)
        self.decoder = SpatialDecoder(channels, cnn_depth)
        self.reward = SpatialRewardHead(channels, hidden_size)

    # ------------------------------------------------------------ one step and rollouts

    def _hidden(self, stacked: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """x_t = f(enc(o_tm1 .. o_tmK), a_tm1): stacked (N, 3K, 64, 64), action (N, A) -> (N, (C_s + C_z) S S)."""
        e = as_map(self.encoder(stacked), self.encoder.channels)  # (N, E) -> (N, E_c, S, S)
        x = self.transition(torch.cat([e, tile(action).to(e.dtype)], 1))  # (N, E_c + A, S, S) -> (N, C, S, S)
        return x.flatten(1)

    def step(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        """One imagined step from the history at t-1 under a_tm1: (history at t, frame o_t, reward r_t).

        The predicted frame (the decoder's mean) is pushed into the history: it is what the next step sees.
        """
        x = self._hidden(self.rssm.stacked(state), action)
        frame = self.decoder(x).float()
        return self.rssm.push(state, frame), frame, self.reward(x).squeeze(-1).float()

    def teacher_forced(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-step predictions of every frame from the true ones before it, all T steps in one batch.

        Timing: prediction[t] is o_t predicted from o_{t-1} .. o_{t-K} (zeros before the chunk) and a[t]::

            o[t-2] o[t-1] --a[t]--> prediction[t] of o[t], reward[t] of r[t]

        observations: (T, B, 3, 64, 64) = o_0..o_{T-1}; actions: (T, B, A), the a_tm1 of each.
        Returns (frames (T, B, 3, 64, 64), rewards (T, B)), equal to stepping :meth:`step` from the
        histories of true frames (tested).
        """
        steps, batch = observations.shape[:2]
        padded = torch.cat([observations.new_zeros(self.rssm.frames, *observations.shape[1:]), observations])
        # history of o_t: o_{t-1} .. o_{t-K}, newest first, stacked on channels: (T, B, 3K, 64, 64)
        history = torch.cat([padded[self.rssm.frames - k:self.rssm.frames - k + steps]
                             for k in range(1, self.rssm.frames + 1)], 2)
        x = self._hidden(history.flatten(0, 1), actions.flatten(0, 1))  # (T, B, .) -> (T*B, .)
        frames = self.decoder(x).float().reshape(steps, batch, 3, 64, 64)
        return frames, self.reward(x).squeeze(-1).float().reshape(steps, batch)

    # ------------------------------------------------------------ the interface actors and planners use

    def observe_step(self, state: State, action: torch.Tensor, observation: torch.Tensor,
                     generator: torch.Generator | None = None) -> State:
        """The actor's belief update: o_t (B, 3, 64, 64) joins the history; a_tm1 is not needed."""
        return self.rssm.push(state, observation)

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        """Predicted rewards (H, N) of rollouts from ``state`` (batch N) under actions (H, N, A): decodes every step."""
        rewards = []
        for action in actions:
            state, _, reward = self.step(state, action)
            rewards.append(reward)
        return torch.stack(rewards)

    def imagine_frames(self, state: State, actions: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Predicted frames (H, N, 3, 64, 64) of rollouts from ``state`` under actions (H, N, A)."""
        frames = []
        for action in actions:
            state, frame, _ = self.step(state, action)
            frames.append(frame)
        return torch.stack(frames)

    def decode(self, state: State) -> torch.Tensor:
        """The newest frame of the history, (N, 3, 64, 64): an ar belief is frames, observed or predicted."""
        return state.deter[:, :FRAME].reshape(-1, 3, 64, 64)

    @torch.no_grad()
    def open_loop(self, context: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As WorldModel.open_loop. The beliefs decoded are the context frames themselves."""
        state = self.rssm.initial(context.shape[1], context.device)
        for frame in context:
            state = self.rssm.push(state, frame)
        return context.float(), self.imagine_frames(state, actions)
