"""Jumpy models (Buesing et al. 2018): one transition covers j agent steps.

A jumpy model is any family's model (the inner model) whose time unit is j agent steps: it takes
the j actions of a jump concatenated (size j A) and predicts the frame at the jump's end and the
rewards of the jump summed. Training packs (T, B) chunks into (T/j, B) ones::

    agent steps   o_0 .. o_{j-1} | o_j .. o_{2j-1} | ...         a_tm1[t], r_tm1[t] lead into o_t
    packed step u frame o_{uj+j-1}, action [a_tm1[uj], .., a_tm1[uj+j-1]] (time order), reward sum of r_tm1[uj..uj+j-1]

so packed action u leads from the last frame of jump u-1 to the last frame of jump u, the same
alignment as the unpacked chunk. Planning advances j agent steps per model call (H/j calls for a
horizon of H agent steps).

Actors still observe and act every agent step. :class:`JumpyModel` keeps their belief as j
interleaved filters: the belief at t is the inner model's posterior after the jump from the belief
at t-j under a_{t-j} .. a_{t-1}, given o_t. Each filter is an ordinary jumpy filter on its own
grid; the newest one is the belief at t, the one a plan starts from. The belief therefore holds the
inner states at t-j+1 .. t and the actions a_{t-j+1} .. a_{t-1} (:class:`JumpyBeliefs`); with j = 1
it is the inner belief itself.
"""

from __future__ import annotations

import torch
from torch import nn

from learner.state import State


def pack_actions(actions: torch.Tensor, jump: int) -> torch.Tensor:
    """(T, N, A) -> (T/j, N, j A): the actions of each jump concatenated in time order."""
    steps, batch, size = actions.shape
    if steps % jump:
        raise ValueError(f"{steps} agent steps cannot be packed into jumps of {jump}: make them a multiple of {jump}")
    grouped = actions.reshape(steps // jump, jump, batch, size)  # (T, N, A) -> (T/j, j, N, A)
    return grouped.permute(0, 2, 1, 3).reshape(steps // jump, batch, jump * size)  # -> (T/j, N, j A)


def pack_jumps(observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, jump: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A time-major chunk in agent steps -> the same chunk in jumps of j (see the module docstring).

    observations (T, B, ...), actions (T, B, A) a_tm1, rewards (T, B) r_tm1 -> (T/j, B, ...),
    (T/j, B, j A), (T/j, B).
    """
    steps = observations.shape[0]
    if actions.shape[0] != steps or rewards.shape[0] != steps:
        raise ValueError(f"pack_jumps: observations, actions and rewards must share T, got {steps}, "
                         f"{actions.shape[0]} and {rewards.shape[0]}")
    if steps % jump:
        raise ValueError(f"a chunk of {steps} steps cannot be packed into jumps of {jump} "
                         f"(train.chunk_length must be divisible by model.jump)")
    summed = rewards.reshape(steps // jump, jump, *rewards.shape[1:]).sum(1)  # (T, B) -> (T/j, j, B) -> (T/j, B)
    return observations[jump - 1::jump], pack_actions(actions, jump), summed


class JumpyBeliefs:
    """An actor's belief for a jumpy model: j inner states and j-1 actions, as one :class:`State`.

    Layout along the last dim: deter = [d_{t-j+1} | .. | d_t | a_{t-j+1} | .. | a_{t-1}], stoch, mean
    and std = [x_{t-j+1} | .. | x_t]: oldest first, D and Z the inner state's sizes. Holds no weights.
    """

    def __init__(self, inner_dynamics, jump: int, action_size: int):
        self.inner, self.jump, self.action_size = inner_dynamics, jump, action_size
        probe = inner_dynamics.initial(1)
        self.deter_size, self.stoch_size = probe.deter.shape[-1], probe.stoch.shape[-1]

    def initial(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> State:
        """j copies of the inner initial state and j-1 zero actions: steps before the episode did nothing."""
        start = self.inner.initial(batch, device, dtype)
        actions = torch.zeros(batch, (self.jump - 1) * self.action_size, device=device, dtype=dtype)
        ring = State.cat([start] * self.jump, dim=-1)
        return State(torch.cat([ring.deter, actions], -1), ring.stoch, ring.mean, ring.std)

    def chain(self, belief: State, k: int) -> State:
        """The inner state of filter k: 0 the oldest (t-j+1), j-1 the newest (t)."""
        d, z = self.deter_size, self.stoch_size
        return State(belief.deter[:, k * d:(k + 1) * d], *(x[:, k * z:(k + 1) * z] for x in
                                                             (belief.stoch, belief.mean, belief.std)))

    def newest(self, belief: State) -> State:
        return self.chain(belief, self.jump - 1)

    def pending(self, belief: State) -> torch.Tensor:
        """a_{t-j+1} .. a_{t-1}: (N, (j-1) A)."""
        return belief.deter[:, self.jump * self.deter_size:]

    def jump_action(self, belief: State, action: torch.Tensor) -> torch.Tensor:
        """[a_{t-j+1} .. a_{t-1}, a_t]: (N, j A), the jump from the oldest filter's time to t+1."""
        return torch.cat([self.pending(belief), action.to(belief.deter.dtype)], -1)

    def advance(self, belief: State, state: State, jump_action: torch.Tensor) -> State:
        """The belief at t+1: drop the oldest filter, append ``state`` (at t+1), keep the last j-1 actions."""
        d, z = self.deter_size, self.stoch_size
        deter = torch.cat([belief.deter[:, d:self.jump * d], state.deter, jump_action[:, self.action_size:]], -1)
        return State(deter, *(torch.cat([old[:, z:], new], -1) for old, new in
                              ((belief.stoch, state.stoch), (belief.mean, state.mean), (belief.std, state.std))))


class JumpyModel(nn.Module):
    """A model of any family whose transitions cover ``jump`` agent steps; the interface of WorldModel.

    ``inner``: the model trained on packed chunks, built for actions of size ``jump * action_size``.
    ``action_size``: A, the size of one agent step's action (what environments and actors use).
    :meth:`imagine_rewards` and :meth:`imagine_frames` take packed actions (H/j, N, j A).
    """

    def __init__(self, inner: nn.Module, jump: int, action_size: int):
        super().__init__()
        if inner.action_size != jump * action_size:
            raise ValueError(f"the inner model takes actions of size {inner.action_size}; a jump of {jump} steps "
                             f"of {action_size} needs {jump * action_size}")
        self.inner, self.jump, self.action_size = inner, jump, action_size
        self.rssm = JumpyBeliefs(inner.rssm, jump, action_size)
        """The belief's keeper, under the name every family's dynamics have (actors call ``rssm.initial``)."""

    def observe_step(self, belief: State, action: torch.Tensor, observation: torch.Tensor,
                     generator: torch.Generator | None = None) -> State:
        """The belief at t from the belief at t-1, a_tm1 (N, A) and o_t: the jump from t-j, then o_t."""
        jump_action = self.rssm.jump_action(belief, action)  # (N, j A)
        state = self.inner.observe_step(self.rssm.chain(belief, 0), jump_action, observation, generator)
        return self.rssm.advance(belief, state, jump_action)

    def imagine_rewards(self, belief: State, actions: torch.Tensor) -> torch.Tensor:
        """Rewards (H/j, N), each summed over its jump, from the newest filter under packed actions (H/j, N, j A)."""
        return self.inner.imagine_rewards(self.rssm.newest(belief), actions)

    def imagine_frames(self, belief: State, actions: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Frames (H/j, N, 3, 64, 64) at the end of each jump, from the newest filter, under packed actions."""
        return self.inner.imagine_frames(self.rssm.newest(belief), actions, generator)

    def decode(self, belief: State) -> torch.Tensor:
        """The newest filter's image mean."""
        return self.inner.decode(self.rssm.newest(belief))

    @torch.no_grad()
    def open_loop(self, context: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As WorldModel.open_loop, in agent steps: the context is filtered step by step as an actor does.

        The model predicts only the frame at the end of each jump; predictions[k] is that of the jump
        agent step k falls in, so predictions[k] is a genuine prediction of o_{C+k} where (k + 1) % j == 0
        and a look ahead at the jump's end elsewhere. P is padded with zero actions to whole jumps.
        """
        belief = self.rssm.initial(context.shape[1], context.device)
        reconstructions = []
        for frame, action in zip(context, context_actions):
            belief = self.observe_step(belief, action, frame, generator)
            reconstructions.append(self.decode(belief))
        steps = actions.shape[0]
        padded = torch.cat([actions, actions.new_zeros(-steps % self.jump, *actions.shape[1:])])
        frames = self.imagine_frames(belief, pack_actions(padded, self.jump), generator)  # (ceil(P/j), B, ...)
        return torch.stack(reconstructions), frames.repeat_interleave(self.jump, 0)[:steps]
