"""CEM planning in latent space (PlaNet, Hafner et al. 2019), batched over candidates and environments.

At every agent step, from the filtered belief of each of B environments::

    q(a_{t:t+H}) = N(0, I)                            per env, step and action dim
    repeat I times:
        sample J sequences, clip to [low, high]       (B, J, H, A)
        roll the prior H steps, sum predicted rewards  one model call over all B*J candidates
        keep the top K per env, refit mean and std     (B, H, A)
    act with the mean of the first action             (B, A)

Discrete actions (Atari) use categorical CEM: the belief is one categorical distribution per
env and step (B, H, n), uniform at first; candidates are index sequences drawn from it (fed to
the model one-hot), and the refit sets the probabilities to the action frequencies among the top
K. The action is the most probable first index.

A jumpy model (Buesing et al.; ``model.jump`` = j) advances j agent steps per transition: the
horizon H stays in agent steps (a multiple of j), candidates are sampled per agent step as always,
and each model call sees them packed into H/j rows of j actions (learner.jumpy.pack_actions), so a
plan takes H/j sequential model steps instead of H.

Exploration noise is the actor's job (:func:`add_exploration`); the planner is deterministic
given its noise. Candidate row n*J + j of every model call is candidate j of env n, which is the
row order of :meth:`State.repeat`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from common.config import PlannerConfig
from common.envs import ActionSpec
from learner.jumpy import pack_actions
from learner.state import PlanningModel, State

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class CEMPlanner:
    """Cross-entropy method over action sequences of a :class:`PlanningModel`.

    horizon H, candidates J, top_k K, iterations I as in PlaNet (12, 1000, 100, 10).
    low / high (A,): action bounds, continuous only. precision "bfloat16" runs the model calls
    under autocast; the CEM statistics stay float32. compile wraps one CEM iteration in
    torch.compile ("reduce-overhead", i.e. CUDA graphs, on CUDA; "default" elsewhere); it is off
    by default and nothing needs it (on CPU it compiles in ~10 s and saves ~15% in float32).
    generator: the randomness of candidates when :meth:`plan` gets no noise (torch's default
    generator when None). The model's own sampling of prior states uses its
    own randomness, which the planner does not control.
    """

    def __init__(self, model: PlanningModel, *, horizon: int, candidates: int, top_k: int, iterations: int,
                 low: torch.Tensor | Sequence[float] | None = None, high: torch.Tensor | Sequence[float] | None = None,
                 discrete: bool = False, device: torch.device | str = "cpu", precision: str = "float32",
                 generator: torch.Generator | None = None, compile: bool = False):
        if not 0 < top_k <= candidates:
            raise ValueError(f"CEM needs 0 < top_k <= candidates, got top_k={top_k}, candidates={candidates}")
        if horizon < 1 or iterations < 1:
            raise ValueError(f"CEM needs horizon >= 1 and iterations >= 1, got {horizon} and {iterations}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        self.jump = getattr(model, "jump", 1)
        """j: agent steps per model transition; the horizon is planned as H/j jumps."""
        if horizon % self.jump:
            raise ValueError(f"horizon {horizon} must be a multiple of the model's jump {self.jump} (agent steps "
                             f"per transition)")
        self.model = model
        self.horizon, self.candidates, self.top_k, self.iterations = horizon, candidates, top_k, iterations
        self.discrete = discrete
        self.device = torch.device(device)
        self.precision = precision
        self.generator = generator
        self.action_size = model.action_size
        """A: action vector size; for discrete actions the number of actions n (the one-hot size)."""
        if discrete:
            self.low = self.high = None
        else:
            if low is None or high is None:
                raise ValueError("continuous CEM needs action bounds low and high of shape (A,)")
            self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device).reshape(-1)
            self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device).reshape(-1)
            if self.low.shape != (self.action_size,) or self.high.shape != (self.action_size,):
                raise ValueError(f"bounds of shape {tuple(self.low.shape)} / {tuple(self.high.shape)} do not match "
                                 f"the model's action size {self.action_size}")
            if not bool((self.low <= self.high).all()):
                raise ValueError(f"action bounds low {self.low.tolist()} exceed high {self.high.tolist()}")
        self._capacity = 0  # largest batch B the buffers hold
        self._buffers: dict[str, torch.Tensor] = {}
        step = self._categorical_iteration if discrete else self._gaussian_iteration
        self._compiled = compile
        if compile and self.device.type == "cuda":
            graphed = torch.compile(step, mode="reduce-overhead")

            def step(*args):
                torch.compiler.cudagraph_mark_step_begin()  # each iteration is a new replay (outputs: see _own)
                return graphed(*args)
        elif compile:
            step = torch.compile(step)
        self._step = step

    @classmethod
    def from_config(cls, model: PlanningModel, config: PlannerConfig, action: ActionSpec, **kwargs) -> CEMPlanner:
        """A planner with PlaNet's settings from ``config`` for an environment's action spec."""
        if action.size != model.action_size:
            raise ValueError(f"the task has {action.size} actions but the model takes actions of size {model.action_size}")
        bounds = {} if action.discrete else {"low": action.low, "high": action.high}
        return cls(model, horizon=config.horizon, candidates=config.candidates, top_k=config.top_k,
                   iterations=config.iterations, discrete=action.discrete, **bounds, **kwargs)

    # ------------------------------------------------------------ public

    def plan(self, state: State, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The action for each of B environments: (B, A) float32 first-action mean, or (B,) int64 index.

        state: the filtered belief, batch (B,). noise: the planner's randomness, continuous
        standard normal (I, B, J, H, A), discrete uniform [0, 1) (I, B, J, H); drawn from the
        generator when None. Environment b's plan depends on state[b] and noise[:, b] only.
        """
        return self.plan_sequence(state, noise)[:, 0]

    def plan_sequence(self, state: State, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The final belief as a sequence: (B, H, A) means, or (B, H) most probable indices (discrete)."""
        with torch.inference_mode():
            batch = self._check(state, noise)
            self._reserve(batch)
            state = state.map(lambda x: x.to(self.device)).repeat(self.candidates)  # (B, .) -> (B*J, .)
            if self.discrete:
                # Unnormalised probabilities: action counts, which keeps inverse-CDF sampling exact.
                counts = torch.ones(self.horizon, batch, self.action_size, device=self.device)  # (H, B, n)
                for i in range(self.iterations):
                    counts = self._own(self._step(state, counts, self._noise(noise, i, batch)))
                return counts.argmax(-1).T.contiguous()  # (H, B) -> (B, H)
            mean = torch.zeros(self.horizon, batch, self.action_size, device=self.device)  # (H, B, A)
            std = torch.ones_like(mean)
            for i in range(self.iterations):
                mean, std = self._own(self._step(state, mean, std, self._noise(noise, i, batch)))
            return mean.transpose(0, 1).contiguous()  # (H, B, A) -> (B, H, A)

    def _own(self, outputs):
        """An iteration's outputs as tensors the next iteration may take as inputs.

        Under CUDA graphs ("reduce-overhead") a compiled call returns views of the graph's static
        output memory, which its next replay overwrites; the next iteration reads them while that
        replay writes. Copied outside the compiled region they are the caller's own (a clone inside
        it is just another graph output). Eager outputs are returned as they are.
        """
        if not self._compiled:
            return outputs
        if isinstance(outputs, tuple):
            return tuple(t.clone() for t in outputs)
        return outputs.clone()

    # ------------------------------------------------------------ one CEM iteration

    def _gaussian_iteration(self, state: State, mean: torch.Tensor, std: torch.Tensor,
                            noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample, evaluate and refit once. mean, std: (H, B, A); noise: (B, J, H, A) standard normal."""
        H, B, A = mean.shape
        J, K = self.candidates, self.top_k
        out = None if self._compiled else self._view("actions", (H, B, J, A))
        # (B, J, H, A) -> (H, B, J, A): time-major, candidates of one env adjacent.
        actions = torch.addcmul(mean[:, :, None], std[:, :, None], noise.permute(2, 0, 1, 3), out=out)
        actions = torch.clamp(actions, self.low, self.high, out=actions if out is not None else None)
        returns = self._returns(state, actions.view(H, B * J, A)).view(B, J)  # (H, B*J) summed over H
        best = returns.topk(K, dim=1, sorted=False).indices  # (B, K)
        elites = actions.gather(2, best[None, :, :, None].expand(H, B, K, A))  # (H, B, K, A)
        return elites.mean(2), elites.std(2, correction=0)

    def _categorical_iteration(self, state: State, counts: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample, evaluate and refit once. counts: (H, B, n); noise: (B, J, H) uniform [0, 1)."""
        H, B, n = counts.shape
        J, K = self.candidates, self.top_k
        # Inverse CDF in float64 over integer counts: exact, so a zero-count action is never drawn.
        cdf = counts.double().cumsum(-1)  # (H, B, n)
        targets = noise.permute(2, 0, 1).to(torch.float64, memory_format=torch.contiguous_format)  # (B, J, H) -> (H, B, J)
        targets = targets * cdf[..., -1:]
        indices = torch.searchsorted(cdf, targets, right=True).clamp_(max=n - 1)  # (H, B, J) int64
        if self._compiled:
            one_hot = torch.nn.functional.one_hot(indices, n).float()
        else:
            one_hot = self._view("actions", (H, B, J, n)).zero_().scatter_(3, indices[..., None], 1.0)
        returns = self._returns(state, one_hot.view(H, B * J, n)).view(B, J)
        best = returns.topk(K, dim=1, sorted=False).indices  # (B, K)
        elites = indices.gather(2, best[None].expand(H, B, K))  # (H, B, K)
        counts = torch.zeros_like(counts).scatter_add_(2, elites, torch.ones_like(elites, dtype=counts.dtype))
        return counts

    def _returns(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        """Sum over H of the predicted rewards of (H, N, A) candidates from ``state`` (N,): (N,) float32."""
        H, N, _ = actions.shape
        if self.jump > 1:
            actions = pack_actions(actions, self.jump)  # (H, N, A) -> (H/j, N, j A)
            H = H // self.jump
        if self.precision == "float32":
            rewards = self.model.imagine_rewards(state, actions)
        else:
            with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision]):
                rewards = self.model.imagine_rewards(state, actions)
        if rewards.shape != (H, N):
            raise ValueError(f"imagine_rewards returned {tuple(rewards.shape)}, expected (H, N) = {(H, N)}")
        return rewards.float().sum(0)

    # ------------------------------------------------------------ inputs and buffers

    def _check(self, state: State, noise: torch.Tensor | None) -> int:
        if len(state.batch_shape) != 1:
            raise ValueError(f"plan expects a state with one batch dimension (B,), got {tuple(state.batch_shape)}")
        batch = state.batch_shape[0]
        if noise is not None:
            expected = self._noise_shape(batch)
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise of shape {tuple(noise.shape)}, expected (I, B, J, H{'' if self.discrete else ', A'})"
                                 f" = {expected}")
        return batch

    def _noise_shape(self, batch: int) -> tuple[int, ...]:
        shape = (self.iterations, batch, self.candidates, self.horizon)
        return shape if self.discrete else shape + (self.action_size,)

    def _noise(self, noise: torch.Tensor | None, i: int, batch: int) -> torch.Tensor:
        """Iteration i's noise, (B, J, H, A) or (B, J, H): the caller's slice, or fresh draws into a buffer."""
        if noise is not None:
            return noise[i].to(self.device, torch.float32)
        buffer = self._view("noise", self._noise_shape(batch)[1:])
        if self.discrete:
            return buffer.uniform_(0.0, 1.0, generator=self.generator)
        return buffer.normal_(generator=self.generator)

    def _reserve(self, batch: int) -> None:
        """Grow the reused flat buffers to hold ``batch`` environments (never shrink)."""
        if batch <= self._capacity:
            return
        per_env = self.candidates * self.horizon * (self.action_size if not self.discrete else 1)
        self._buffers = {
            "noise": torch.empty(batch * per_env, device=self.device),
            "actions": torch.empty(batch * self.candidates * self.horizon * self.action_size, device=self.device),
        }
        self._capacity = batch

    def _view(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A contiguous view of the first prod(shape) elements of a buffer."""
        size = 1
        for dim in shape:
            size *= dim
        return self._buffers[name][:size].view(shape)


def add_exploration(action: torch.Tensor, noise_std: float, low: torch.Tensor | Sequence[float],
                    high: torch.Tensor | Sequence[float], generator: torch.Generator | None = None) -> torch.Tensor:
    """``action + N(0, noise_std^2)`` clipped to [low, high] (PlaNet's exploration while collecting: std 0.3).

    action: (..., A) float; a new tensor is returned. noise_std 0 only clips.
    """
    low = torch.as_tensor(low, dtype=action.dtype, device=action.device)
    high = torch.as_tensor(high, dtype=action.dtype, device=action.device)
    if noise_std > 0:
        noise = torch.randn(action.shape, generator=generator, dtype=action.dtype, device=action.device)
        action = action + noise_std * noise
    return torch.clamp(action, low, high)
