"""Planner and learner on CUDA: equal to their CPU results, one host sync per update, compiled paths equal eager."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from actors.planner import CEMPlanner
from common.config import load_config
from common.device import setup_process
from common.envs import ActionSpec
from learner.learner import Learner
from learner.world_model import WorldModel
from tests.synthetic import moving_square
from tests.unit.test_planner import assert_compiled_plans_equal

CFG = load_config("debug", ["model.cnn_depth=4"])
SPEC = ActionSpec(discrete=False, size=2, low=(-1.0, -1.0), high=(1.0, 1.0))


@pytest.fixture(autouse=True)
def exact_float32():
    """Compare CUDA with CPU in true float32 (setup_process turns TF32 on for speed; these tests turn it off)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def model_and_belief(device: str, cfg=CFG, count: int = 3):
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, SPEC.size).eval()
    frames = torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(1)) - 0.5
    model = model.to(device)
    with torch.inference_mode():
        belief = model.observe_step(model.rssm.initial(count, device), torch.zeros(count, SPEC.size, device=device),
                                    frames.to(device))
    return model, belief.map(lambda x: x.clone())


def test_setup_process_on_a_reserved_gpu(monkeypatch):
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "0")
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")  # what setup_process sets is undone after the test
    placed = setup_process("test", gpu_ids=[0], precision="auto", threads=8)
    assert placed.device == torch.device("cuda", 0) and placed.on_gpu
    assert placed.threads <= 2 and torch.get_num_threads() == placed.threads
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark
    assert placed.precision == ("bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float32")
    assert "cuda:0" in placed.describe() and torch.cuda.get_device_name(0) in placed.describe()


def test_planner_on_cuda_equals_the_cpu_plan_given_the_same_noise():
    """The deterministic family samples nothing itself, so given the planner's noise a plan is a pure function."""
    cfg = load_config("debug", ["model.cnn_depth=4", "model.family=deterministic"])
    cpu_model, cpu_belief = model_and_belief("cpu", cfg)
    gpu_model, gpu_belief = model_and_belief("cuda", cfg)
    gpu_model.load_state_dict(cpu_model.state_dict())
    torch.testing.assert_close(gpu_belief.deter.cpu(), cpu_belief.deter, rtol=1e-4, atol=1e-5)
    planners = {device: CEMPlanner.from_config(model, cfg.planner, SPEC, device=device)
                for device, model in (("cpu", cpu_model), ("cuda", gpu_model))}
    noise = torch.randn(planners["cpu"]._noise_shape(3), generator=torch.Generator().manual_seed(2))
    cpu = planners["cpu"].plan_sequence(cpu_belief, noise)
    gpu = planners["cuda"].plan_sequence(gpu_belief.map(lambda x: x.cuda()), noise.cuda())
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=2e-3)


def test_planner_draws_its_own_noise_on_the_gpu():
    model, belief = model_and_belief("cuda")
    planner = CEMPlanner.from_config(model, CFG.planner, SPEC, device="cuda",
                                     generator=torch.Generator("cuda").manual_seed(0))
    action = planner.plan(belief)
    assert action.device.type == "cuda" and action.shape == (3, 2) and bool(action.abs().le(1).all())


@pytest.mark.parametrize("discrete", [False, True])
def test_cuda_graph_planner_equals_the_eager_one(discrete):
    """compile on CUDA = CUDA graphs: each iteration's outputs feed the next replay and must not be overwritten."""
    spec = ActionSpec(discrete=True, size=5) if discrete else SPEC
    torch.manual_seed(0)
    model = WorldModel.from_config(CFG, spec.size).cuda().eval()
    with torch.inference_mode():
        belief = model.observe_step(model.rssm.initial(2, "cuda"), torch.zeros(2, spec.size, device="cuda"),
                                    torch.rand(2, 3, 64, 64, device="cuda") - 0.5)
    eager = CEMPlanner.from_config(model, CFG.planner, spec, device="cuda")
    graphed = CEMPlanner.from_config(model, CFG.planner, spec, device="cuda", compile=True)
    assert_compiled_plans_equal(eager, graphed, belief, discrete, "cuda", rtol=1e-3, atol=1e-4, plans=3)


def batch(seed=0, size=4, length=8):
    return moving_square(size, length, seed)


def test_learner_on_cuda_equals_the_cpu_learner():
    """Same weights, same batch: the first update's losses agree (the noise generators differ: CPU vs CUDA)."""
    cpu = Learner(CFG, 2, seed=0, precision="float32")
    gpu = Learner(CFG, 2, device="cuda", seed=0, precision="float32")
    gpu.model.load_state_dict(cpu.model.state_dict())
    a, b = cpu.update(batch()), gpu.update(batch())
    assert b["learner/update_applied"] == 1.0
    for key in ("learner/image_loss", "learner/reward_loss"):
        assert b[key] == pytest.approx(a[key], rel=0.05), key


def test_a_learner_update_waits_for_the_gpu_once():
    """One host sync per update (the metrics copy); the staged batch goes to the GPU asynchronously from pinned memory."""
    learner = Learner(CFG, 2, device="cuda", seed=0, precision="float32")
    staged = learner.stage(batch())
    assert staged["observations"].is_pinned()
    learner.update(learner.stage(batch(1)))  # warm-up: allocator, cuDNN's search
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learner.update(staged)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, syncs


def test_checkpoints_resume_on_the_gpu_and_across_devices(tmp_path):
    from learner import checkpoint

    data = [batch(i) for i in range(4)]
    a = Learner(CFG, 2, device="cuda", seed=0)
    for b in data[:2]:
        a.update(b)
    checkpoint.save(tmp_path, a.state_dict())
    state = checkpoint.load(tmp_path)  # on the CPU, as the learner worker loads it
    assert state["generator"].device.type == "cpu"
    b = Learner(CFG, 2, device="cuda", seed=5)
    b.load_state_dict(state)
    for chunk in data[2:]:
        assert a.update(chunk)["learner/total_loss"] == b.update(chunk)["learner/total_loss"]
    c = Learner(CFG, 2, device="cpu", seed=0)  # a GPU run resumed on a CPU: reseeded, goes on
    c.load_state_dict(state)
    assert np.isfinite(c.update(data[3])["learner/total_loss"])


def test_compiled_learner_on_cuda_equals_eager():
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        eager = Learner(CFG, 2, device="cuda", seed=0, precision="float32")
        eager.loss_generator = None
        compiled = Learner(CFG, 2, device="cuda", seed=0, precision="float32", compile=True)
        for i in range(3):
            torch.manual_seed(i)
            a = eager.update(batch(i))
            torch.manual_seed(i)
            b = compiled.update(batch(i))
            assert b["learner/total_loss"] == pytest.approx(a["learner/total_loss"], rel=1e-3)
    assert not counters["graph_break"], dict(counters["graph_break"])
