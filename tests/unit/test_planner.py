"""CEM planner on fake models whose optimum is known (Acme's mppi_test): convergence, bounds, batching."""

from __future__ import annotations

import pytest
import torch

from actors.planner import CEMPlanner, add_exploration
from common.config import PlannerConfig
from common.envs import ActionSpec
from learner.state import State

H, A, J, K, I = 4, 2, 200, 20, 8
Z = 3


def make_state(shifts: list[float]) -> State:
    """A batch (B,) whose mean[:, 0] is each env's shift of the optimum, so envs differ."""
    mean = torch.zeros(len(shifts), Z)
    mean[:, 0] = torch.tensor(shifts)
    return State(torch.zeros(len(shifts), 5), mean.clone(), mean, torch.ones(len(shifts), Z))


class QuadraticModel:
    """reward_k = -||a_k - (target_k + shift_n)||^2, shift_n = state.mean[n, 0]: the optimum is known.

    The squared distance is summed by a matmul so that bfloat16 autocast changes the arithmetic.
    """

    def __init__(self, target: torch.Tensor):
        self.target = target  # (H, A)
        self.action_size = target.shape[-1]
        self.calls: list[tuple[int, ...]] = []

    def optimum(self, shifts: list[float]) -> torch.Tensor:
        return self.target[None] + torch.tensor(shifts)[:, None, None]  # (B, H, A)

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(actions.shape))
        target = self.target[:, None, :] + state.mean[None, :, :1]  # (H, N, A)
        squared = (actions - target) ** 2
        return -(squared @ torch.ones(self.action_size, 1, device=actions.device)).squeeze(-1)  # (H, N)


class PickModel:
    """Discrete: reward 1 for action best[k] + shift_n (mod n) at step k, 0 else."""

    def __init__(self, best: list[int], n: int):
        self.best = torch.tensor(best)  # (H,)
        self.action_size = n
        self.calls: list[tuple[int, ...]] = []

    def optimum(self, shifts: list[int]) -> torch.Tensor:
        return (self.best[None] + torch.tensor(shifts)[:, None]) % self.action_size  # (B, H)

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(actions.shape))
        wanted = (self.best[:, None] + state.mean[None, :, 0].long()) % self.action_size  # (H, N)
        return actions.gather(2, wanted[..., None]).squeeze(-1)  # one-hot value at the wanted index


TARGET = torch.tensor([[0.5, -0.3], [0.2, 0.1], [-0.4, 0.6], [0.0, -0.2]])
SHIFTS = [0.0, 0.2, -0.3]


def continuous(model, **kwargs) -> CEMPlanner:
    settings = dict(horizon=H, candidates=J, top_k=K, iterations=I, low=[-1.0] * A, high=[1.0] * A,
                    generator=torch.Generator().manual_seed(0))
    return CEMPlanner(model, **{**settings, **kwargs})


def discrete(model, **kwargs) -> CEMPlanner:
    settings = dict(horizon=H, candidates=J, top_k=K, iterations=I, discrete=True,
                    generator=torch.Generator().manual_seed(0))
    return CEMPlanner(model, **{**settings, **kwargs})


def test_continuous_converges_to_the_known_optimum_per_env():
    model = QuadraticModel(TARGET)
    planner = continuous(model)
    action = planner.plan(make_state(SHIFTS))
    assert action.shape == (3, A) and action.dtype == torch.float32
    torch.testing.assert_close(action, model.optimum(SHIFTS)[:, 0], atol=0.03, rtol=0)
    torch.testing.assert_close(planner.plan_sequence(make_state(SHIFTS)), model.optimum(SHIFTS), atol=0.05, rtol=0)


def test_continuous_model_called_once_per_iteration_with_all_candidates():
    model = QuadraticModel(TARGET)
    continuous(model).plan(make_state(SHIFTS))
    assert model.calls == [(H, 3 * J, A)] * I


def test_bounds_are_respected_when_the_optimum_lies_outside():
    model = QuadraticModel(torch.tensor([[2.0, -3.0], [0.3, 5.0]] + [[0.0, 0.0]] * (H - 2)))
    planner = continuous(model, low=[-1.0, -0.5], high=[1.0, 0.5])
    sequence = planner.plan_sequence(make_state([0.0]))[0]
    torch.testing.assert_close(sequence[0], torch.tensor([1.0, -0.5]), atol=1e-3, rtol=0)
    torch.testing.assert_close(sequence[1], torch.tensor([0.3, 0.5]), atol=0.05, rtol=0)
    assert bool((sequence[:, 0].abs() <= 1.0).all()) and bool((sequence[:, 1].abs() <= 0.5).all())


def test_continuous_batch_equals_separate_plans_given_the_same_noise():
    model = QuadraticModel(TARGET)
    planner = continuous(model)
    noise = torch.randn(I, len(SHIFTS), J, H, A, generator=torch.Generator().manual_seed(1))
    batched = planner.plan_sequence(make_state(SHIFTS), noise)
    for b, shift in enumerate(SHIFTS):
        alone = planner.plan_sequence(make_state([shift]), noise[:, b:b + 1])
        torch.testing.assert_close(alone[0], batched[b], atol=1e-6, rtol=0)
    assert not torch.allclose(batched[0], batched[1], atol=0.05)  # different optima: a mix-up would show


def test_discrete_finds_the_rewarded_index_per_env():
    model = PickModel([3, 0, 5, 1], n=6)
    shifts = [0, 1, 4]
    planner = discrete(model)
    action = planner.plan(make_state(shifts))
    assert action.shape == (3,) and action.dtype == torch.int64
    assert action.tolist() == model.optimum(shifts)[:, 0].tolist()
    assert planner.plan_sequence(make_state(shifts)).tolist() == model.optimum(shifts).tolist()
    assert model.calls == [(H, 3 * J, 6)] * (2 * I)


def test_discrete_batch_equals_separate_plans_given_the_same_noise():
    model = PickModel([3, 0, 5, 1], n=6)
    shifts = [0, 1, 4, 2]
    # Few iterations and candidates, so the plans are still uncertain and depend on the noise.
    planner = discrete(model, candidates=12, top_k=3, iterations=2)
    noise = torch.rand(2, len(shifts), 12, H, generator=torch.Generator().manual_seed(2))
    batched = planner.plan_sequence(make_state(shifts), noise)
    for b, shift in enumerate(shifts):
        assert planner.plan_sequence(make_state([shift]), noise[:, b:b + 1]).tolist() == batched[b:b + 1].tolist()


def test_discrete_never_draws_an_action_with_zero_probability():
    model = PickModel([2, 2], n=4)
    seen: list[torch.Tensor] = []
    record = model.imagine_rewards
    model.imagine_rewards = lambda state, actions: seen.append(actions.clone()) or record(state, actions)
    planner = discrete(model, horizon=2, candidates=400, top_k=5, iterations=2)
    # Iteration 1 is random; about 25 candidates pick index 2 twice, so the refit puts all mass on it.
    # Iteration 2 draws at the extremes of [0, 1), where float32 rounding would reach a neighbour.
    noise = torch.rand(2, 1, 400, 2, generator=torch.Generator().manual_seed(3))
    noise[1, :, :200] = 0.0
    noise[1, :, 200:] = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    assert planner.plan(make_state([0]), noise).tolist() == [2]
    assert bool((seen[1].argmax(-1) == 2).all()) and bool((seen[1].sum(-1) == 1).all())


def test_seeded_generator_gives_the_same_plan():
    model = QuadraticModel(TARGET)
    first = continuous(model, candidates=16, top_k=4, iterations=2).plan(make_state(SHIFTS))
    again = continuous(model, candidates=16, top_k=4, iterations=2).plan(make_state(SHIFTS))
    other = continuous(model, candidates=16, top_k=4, iterations=2,
                       generator=torch.Generator().manual_seed(7)).plan(make_state(SHIFTS))
    assert torch.equal(first, again) and not torch.equal(first, other)
    pick = PickModel([3, 0, 5, 1], n=6)
    plans = [discrete(pick, candidates=6, top_k=2, iterations=1).plan_sequence(make_state([0, 1])) for _ in range(2)]
    assert torch.equal(*plans)


def test_buffers_are_reused_across_batch_sizes_and_outputs_do_not_alias_them():
    model = QuadraticModel(TARGET)
    planner = continuous(model, candidates=16, top_k=4, iterations=2)
    noise = torch.randn(2, 3, 16, H, A)
    big = planner.plan(make_state(SHIFTS), noise)
    buffers = {name: t.data_ptr() for name, t in planner._buffers.items()}
    small = planner.plan(make_state(SHIFTS[:1]), noise[:, :1])
    assert {name: t.data_ptr() for name, t in planner._buffers.items()} == buffers
    torch.testing.assert_close(small[0], big[0], atol=1e-6, rtol=0)
    assert torch.equal(planner.plan(make_state(SHIFTS), noise), big)


def test_bfloat16_precision_still_finds_the_optimum():
    model = QuadraticModel(TARGET)
    action = continuous(model, precision="bfloat16").plan(make_state(SHIFTS))
    assert action.dtype == torch.float32
    torch.testing.assert_close(action, model.optimum(SHIFTS)[:, 0], atol=0.08, rtol=0)
    pick = PickModel([3, 0, 5, 1], n=6)
    assert discrete(pick, precision="bfloat16").plan(make_state([0, 1])).tolist() == pick.optimum([0, 1])[:, 0].tolist()


def test_from_config_and_argument_checks():
    model = QuadraticModel(TARGET)
    config = PlannerConfig(horizon=H, candidates=32, top_k=4, iterations=3)
    spec = ActionSpec(discrete=False, size=A, low=(-1.0, -1.0), high=(1.0, 1.0))
    planner = CEMPlanner.from_config(model, config, spec)
    assert (planner.horizon, planner.candidates, planner.top_k, planner.iterations) == (H, 32, 4, 3)
    assert planner.plan(make_state([0.0])).shape == (1, A)
    assert CEMPlanner.from_config(PickModel([0] * H, 5), config, ActionSpec(discrete=True, size=5)).discrete
    with pytest.raises(ValueError, match="actions of size"):
        CEMPlanner.from_config(model, config, ActionSpec(discrete=False, size=3, low=(0,) * 3, high=(1,) * 3))
    with pytest.raises(ValueError, match="top_k"):
        continuous(model, top_k=J + 1)
    with pytest.raises(ValueError, match="noise"):
        planner.plan(make_state([0.0]), torch.zeros(3, 1, 32, H))


def test_add_exploration_adds_gaussian_noise_and_clips():
    action = torch.zeros(20000, 2)
    noisy = add_exploration(action, 0.3, [-1.0, -0.1], [1.0, 0.1], torch.Generator().manual_seed(0))
    assert noisy.shape == action.shape and bool((action == 0).all())
    assert abs(noisy[:, 0].std().item() - 0.3) < 0.01 and noisy[:, 1].abs().max().item() == pytest.approx(0.1)
    assert torch.equal(add_exploration(torch.tensor([2.0, -2.0]), 0.0, [-1, -1], [1, 1]), torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("task_action", [
    ActionSpec(discrete=False, size=3, low=(-1.0, -2.0, 0.0), high=(1.0, 2.0, 0.5)),
    ActionSpec(discrete=True, size=5),
])
def test_plans_with_the_real_world_model(task_action):
    from common.config import load_config
    from learner.world_model import WorldModel

    cfg = load_config("debug", ["model.cnn_depth=2"])
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, task_action.size)
    planner = CEMPlanner.from_config(model, cfg.planner, task_action, precision="bfloat16",
                                     generator=torch.Generator().manual_seed(0))
    belief = model.observe_step(model.rssm.initial(4), torch.zeros(4, task_action.size), torch.rand(4, 3, 64, 64) - 0.5)
    action = planner.plan(belief)
    if task_action.discrete:
        assert action.shape == (4,) and action.dtype == torch.int64 and bool(((0 <= action) & (action < 5)).all())
    else:
        assert action.shape == (4, 3) and action.dtype == torch.float32
        assert bool((action >= torch.tensor(task_action.low)).all() and (action <= torch.tensor(task_action.high)).all())


@pytest.mark.slow
@pytest.mark.parametrize("discrete_actions", [False])  # both kinds under CUDA graphs: tests/gpu (compiling costs ~30 s)
def test_compiled_iterations_plan_as_eager_ones(discrete_actions):
    """planner.compile: each iteration's outputs feed the next call; compiled plans equal eager ones (same noise)."""
    from common.config import load_config
    from learner.world_model import WorldModel

    cfg = load_config("debug", ["model.cnn_depth=2"])
    spec = ActionSpec(discrete=True, size=5) if discrete_actions else ActionSpec(discrete=False, size=2,
                                                                                   low=(-1.0, -1.0), high=(1.0, 1.0))
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, spec.size).eval()
    belief = model.observe_step(model.rssm.initial(3), torch.zeros(3, spec.size), torch.rand(3, 3, 64, 64) - 0.5)
    eager = CEMPlanner.from_config(model, cfg.planner, spec)
    compiled = CEMPlanner.from_config(model, cfg.planner, spec, compile=True)
    assert_compiled_plans_equal(eager, compiled, belief, discrete_actions, "cpu", rtol=1e-4, atol=1e-5)


def assert_compiled_plans_equal(eager: CEMPlanner, compiled: CEMPlanner, belief: State, discrete: bool, device: str,
                                rtol: float, atol: float, plans: int = 2) -> None:
    """Plan ``plans`` times with both planners from the same noise and the same prior samples; the plans must agree.

    Later plans run on the compiled code (and, under CUDA graphs, on replays) of the first.
    """
    import torch._inductor.config

    shape = eager._noise_shape(belief.batch_shape[0])
    with torch._inductor.config.patch(fallback_random=True):  # the prior's samples drawn as eager draws them
        for seed in range(plans):
            generator = torch.Generator(device).manual_seed(seed)
            noise = (torch.rand if discrete else torch.randn)(shape, generator=generator, device=device)
            torch.manual_seed(seed)
            expected = eager.plan_sequence(belief, noise)
            torch.manual_seed(seed)
            got = compiled.plan_sequence(belief, noise)
            if discrete:
                assert torch.equal(got, expected)
            else:
                torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
