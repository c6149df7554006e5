"""Speed (and optionally bfloat16 plan quality) of CEM planning with the real world model.

    python tests/benchmarks/bench_planner.py --device cpu --threads 2 --batch 1 [--precision bfloat16] [--quality]

Prints one JSON line:

- ``ms_per_plan``: wall milliseconds of one ``plan()`` call for the whole batch of B environments
  (I iterations of J candidates over H steps each), median over ``--repeats`` after warm-up.
- ``ms_per_action``: the same number (one call yields the next action of every environment; the
  latency an environment waits for its action). Kept under this name for dashboards.
- ``actions_per_s``: B * 1000 / ms_per_plan, the actor's planning throughput over its environments.
- with ``--quality``: ``bf16_vs_fp32_return_ratio`` = sum over S random states of
  (R_bf16 - R_random) / sum of (R_fp32 - R_random), where R is the float32 model's expected
  return (sum of predicted rewards over H, averaged over prior samples) of the final mean action
  sequence planned from the same state with the same noise, and R_random that of uniform random
  sequences: the share of float32 planning's gain over random that bfloat16 planning keeps (1.0 is
  no loss). ``bf16_vs_fp32_mean_rel_diff`` = mean |R_bf16 - R_fp32| / mean (R_fp32 - R_random),
  next to ``fp32_other_noise_mean_rel_diff``, the same for float32 with different noise: the
  spread CEM has anyway.

``--profile`` prints the top operators of one plan to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from actors.planner import CEMPlanner
from common.config import load_config
from common.device import setup_process
from learner.state import State
from learner.world_model import WorldModel


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def build_model(args) -> WorldModel:
    cfg = load_config("", [f"model.family={args.family}", f"model.deter_size={args.deter}",
                           f"model.stoch_size={args.stoch}", f"model.hidden_size={args.hidden}"])
    return WorldModel.from_config(cfg, args.action_size).to(args.device).eval()


def random_states(model: WorldModel, batch: int, device: str, steps: int = 10) -> State:
    """States on the prior's own manifold: ``steps`` imagined steps of random actions from the initial state."""
    with torch.inference_mode():
        actions = torch.rand(steps, batch, model.action_size, device=device) * 2 - 1  # (T, B, A) in [-1, 1]
        return model.rssm.imagine(actions, model.rssm.initial(batch, device))[-1]


def make_planner(model: WorldModel, args, precision: str) -> CEMPlanner:
    bound = torch.ones(args.action_size)
    return CEMPlanner(model, horizon=args.horizon, candidates=args.candidates, top_k=args.top_k,
                      iterations=args.iterations, low=-bound, high=bound, device=args.device, precision=precision,
                      generator=torch.Generator(args.device).manual_seed(0), compile=args.compile)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_speed(model: WorldModel, args) -> dict:
    planner = make_planner(model, args, args.precision)
    state = random_states(model, args.batch, args.device)
    for _ in range(args.warmup):
        planner.plan(state)
    synchronize(args.device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        planner.plan(state)
        synchronize(args.device)
        times.append((time.perf_counter() - start) * 1000)
    ms = statistics.median(times)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            planner.plan(state)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=__import__("sys").stderr)
    return {"ms_per_plan": round(ms, 2), "ms_per_action": round(ms, 2), "actions_per_s": round(args.batch * 1000 / ms, 2),
            "ms_min": round(min(times), 2), "ms_max": round(max(times), 2)}


def expected_returns(model: WorldModel, state: State, sequences: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """Float32 model's mean over ``samples`` prior rollouts of the summed rewards of (S, H, A) sequences: (S,)."""
    S, H, A = sequences.shape
    torch.manual_seed(seed)  # common random numbers for every plan compared
    with torch.inference_mode():
        actions = sequences.repeat_interleave(samples, 0).transpose(0, 1)  # (S, H, A) -> (H, S*samples, A)
        rewards = model.imagine_rewards(state.repeat(samples), actions.contiguous())  # (H, S*samples)
    return rewards.sum(0).view(S, samples).mean(1)


def measure_quality(model: WorldModel, args) -> dict:
    S = args.quality_states
    state = random_states(model, S, args.device)
    shape = (args.iterations, S, args.candidates, args.horizon, args.action_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(args.device)
    other = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(args.device)
    plans = {}
    for name, precision, eps in (("fp32", "float32", noise), ("bf16", "bfloat16", noise), ("other", "float32", other)):
        torch.manual_seed(0)  # the model's prior samples inside the plan
        plans[name] = make_planner(model, args, precision).plan_sequence(state, eps)  # (S, H, A)
    returns = {name: expected_returns(model, state, seq, args.quality_samples, seed=3) for name, seq in plans.items()}
    random = torch.stack([expected_returns(model, state, torch.rand_like(plans["fp32"]) * 2 - 1, args.quality_samples, 4 + k)
                          for k in range(8)]).mean(0)
    gain = (returns["fp32"] - random).mean().item()
    return {
        "bf16_vs_fp32_return_ratio": round((returns["bf16"] - random).mean().item() / gain, 4),
        "bf16_vs_fp32_mean_rel_diff": round((returns["bf16"] - returns["fp32"]).abs().mean().item() / gain, 4),
        "fp32_other_noise_mean_rel_diff": round((returns["other"] - returns["fp32"]).abs().mean().item() / gain, 4),
        "fp32_return_gain_over_random": round(gain, 5),
        "bf16_vs_fp32_first_action_max_diff": round((plans["bf16"][:, 0] - plans["fp32"][:, 0]).abs().max().item(), 4),
        "quality_states": S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=1, help="B: environments planned for in one call")
    parser.add_argument("--candidates", type=int, default=1000, help="J")
    parser.add_argument("--horizon", type=int, default=12, help="H")
    parser.add_argument("--iterations", type=int, default=10, help="I")
    parser.add_argument("--top-k", type=int, default=100, help="K")
    parser.add_argument("--deter", type=int, default=200, help="D")
    parser.add_argument("--stoch", type=int, default=30, help="Z")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--action-size", type=int, default=6, help="A (cheetah-run: 6)")
    parser.add_argument("--family", default="rssm")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed plan() calls (median reported)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed plan() calls first (compilation and CUDA-graph recording happen there)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the CEM iteration")
    parser.add_argument("--quality", action="store_true", help="also compare bfloat16 plans with float32 ones")
    parser.add_argument("--quality-states", type=int, default=20)
    parser.add_argument("--quality-samples", type=int, default=64, help="prior rollouts per evaluated sequence")
    parser.add_argument("--profile", action="store_true", help="operator table of one plan on stderr")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        setup_process("bench", device=args.device, threads=args.threads or 2)  # TF32 and cuDNN autotuning, as an actor on a GPU has them
    model = build_model(args)
    figures = measure_speed(model, args)
    if args.quality:
        figures.update(measure_quality(model, args))
    settings = {key: getattr(args, key) for key in ("device", "batch", "candidates", "horizon", "iterations", "top_k",
                                                    "deter", "stoch", "hidden", "action_size", "family", "precision",
                                                    "repeats", "warmup", "compile")}
    figures.update(settings, threads=torch.get_num_threads(), torch=torch.__version__, cpu=cpu_model())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
