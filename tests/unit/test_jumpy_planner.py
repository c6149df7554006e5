"""CEM planning with jumpy models: j = 1 is the ordinary step, a known optimum is found through the
packing, and a plan takes H/j sequential model steps."""

import pytest
import torch

from actors.planner import CEMPlanner
from common.config import load_config
from common.envs import ActionSpec
from learner.jumpy import JumpyModel
from learner.state import State
from learner.world_model import WorldModel

H, A, J, K, I = 4, 2, 200, 20, 8
SMALL = dict(hidden_size=16, cnn_depth=2, state_channels=4, latent_channels=2)
TARGET = torch.tensor([[0.5, -0.3], [0.2, 0.1], [-0.4, 0.6], [0.0, -0.2]])  # (H, A), per agent step


class QuadraticJumpyModel:
    """jump 2: each row of actions is two agent steps; reward -||a_k - target_k||^2 summed per jump."""

    jump = 2
    action_size = A

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def imagine_rewards(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(actions.shape))
        target = TARGET.reshape(H // 2, 1, 2 * A)  # (H, A) -> (H/j, 1, j A): the jumps' actions in time order
        return -((actions - target) ** 2).sum(-1)  # (H/j, N)


def belief(batch: int) -> State:
    zeros = torch.zeros(batch, 3)
    return State(zeros, zeros, zeros, torch.ones(batch, 3))


def planner(model, **kwargs) -> CEMPlanner:
    settings = dict(horizon=H, candidates=J, top_k=K, iterations=I, low=[-1.0] * A, high=[1.0] * A,
                    generator=torch.Generator().manual_seed(0))
    return CEMPlanner(model, **{**settings, **kwargs})


def test_cem_finds_the_optimum_through_jumps():
    model = QuadraticJumpyModel()
    sequence = planner(model).plan_sequence(belief(3))
    assert sequence.shape == (3, H, A)
    torch.testing.assert_close(sequence, TARGET.expand(3, H, A), atol=0.05, rtol=0)
    assert model.calls == [(H // 2, 3 * J, 2 * A)] * I


def test_horizon_must_hold_whole_jumps():
    with pytest.raises(ValueError, match="multiple of the model's jump 2"):
        planner(QuadraticJumpyModel(), horizon=3)


@pytest.mark.parametrize("family", ["dssm", "sssm"])
@pytest.mark.parametrize("discrete", [False, True])
def test_jumpy_model_of_one_step_plans_as_the_ordinary_step(family, discrete):
    torch.manual_seed(0)
    size = 5 if discrete else A
    inner = WorldModel(family, size, **SMALL).eval()
    jumpy = JumpyModel(inner, 1, size)
    frame = torch.rand(3, 3, 64, 64) - 0.5
    with torch.inference_mode():
        plain = inner.observe_step(inner.rssm.initial(3), torch.zeros(3, size), frame, torch.Generator().manual_seed(3))
        wrapped = jumpy.observe_step(jumpy.rssm.initial(3), torch.zeros(3, size), frame,
                                     torch.Generator().manual_seed(3))
    assert torch.equal(plain.features, wrapped.features)
    shape = (2, 3, 16, H) if discrete else (2, 3, 16, H, A)
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    noise = noise if discrete else torch.randn(shape, generator=torch.Generator().manual_seed(1))
    bounds = {"discrete": True, "low": None, "high": None} if discrete else {}
    plans = []
    for model, state in ((inner, plain), (jumpy, wrapped)):
        torch.manual_seed(2)  # the sssm prior's own samples
        plans.append(planner(model, candidates=16, top_k=4, iterations=2, **bounds).plan_sequence(state, noise))
    assert torch.equal(plans[0], plans[1])


def test_a_jumpy_world_model_plans_in_h_over_j_sequential_steps():
    cfg = load_config("debug", ["model.cnn_depth=2", "model.family=sssm", "model.jump=2"])
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, A).eval()
    steps = []
    step = model.inner.rssm.step
    model.inner.rssm.step = lambda *args, **kwargs: steps.append(1) or step(*args, **kwargs)
    spec = ActionSpec(discrete=False, size=A, low=(-1.0, -1.0), high=(1.0, 1.0))
    plan = CEMPlanner.from_config(model, cfg.planner, spec, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        state = model.observe_step(model.rssm.initial(2), torch.zeros(2, A), torch.rand(2, 3, 64, 64) - 0.5)
    steps.clear()
    action = plan.plan(state)
    assert action.shape == (2, A) and bool((action.abs() <= 1).all())
    assert len(steps) == cfg.planner.iterations * cfg.planner.horizon // 2
