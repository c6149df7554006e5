"""Actors, evaluation and whole runs on a GPU: actors plan on their GPU share, a run finishes and resumes there."""

from __future__ import annotations

import json

import numpy as np
import torch

from actors.actor import Actor
from actors.evaluator import evaluate, render_results
from cluster.driver import Driver
from common.config import load_config
from tests.e2e.train_support import PRESET, acknowledged, records, stored_ids

GPU_SHARES = ["cluster.learner_gpus=auto", "cluster.actor_gpus=auto"]  # the debug preset asks for the CPU


def test_an_actor_plans_on_the_gpu_and_times_its_plans():
    cfg = load_config(PRESET)
    written = []
    actor = Actor(cfg, index=0, run="gpu-actor", seed=0, write=written.append, device="cuda")
    assert next(actor.model.parameters()).device.type == "cuda"
    try:
        episodes = actor.run_episodes(1)
    finally:
        actor.close()
    assert written and episodes[0].length > 0 and np.isfinite(episodes[0].rewards).all()
    assert len(actor.plan_ms) >= episodes[0].length and min(actor.plan_ms) > 0


def test_an_evaluation_plans_and_renders_on_the_gpu():
    cfg = load_config(PRESET)
    torch.manual_seed(0)
    from learner.world_model import WorldModel
    weights = WorldModel.from_config(cfg, 1).state_dict()
    result = evaluate(cfg, weights, 3, episodes=1, seed=0, run="gpu-eval", device="cuda")
    assert next(result["model"].parameters()).device.type == "cuda"
    files = render_results(result, env_steps=0, bit_depth=cfg.env.bit_depth)
    assert files["open_loop.gif"][:6] == b"GIF89a" and json.loads(files["returns.json"])["policy_version"] == 3


def test_a_two_actor_run_with_gpu_actors_finishes_and_resumes_on_the_gpu(tmp_path):
    run_dir = tmp_path / "gpu-run"
    settings = GPU_SHARES + ["cluster.actors=2", "cluster.dashboard=false", "cluster.metrics_port=-1"]
    lines: list[str] = []
    summary = Driver(load_config(PRESET, settings + ["train.budget_env_steps=1000"]), run_dir,
                     log=lines.append, show_progress=False).run()
    assert summary["env_steps"] >= 1000 and summary["updates"] > 0
    said = "\n".join(lines)
    assert "processes: learner 0.5 GPU, 2 actor(s) x 0.1666 GPU" in said, said
    assert "learner: cuda:0" in said and "actor 0: cuda:0" in said and "actor 1: cuda:0" in said, said
    assert stored_ids(run_dir) == acknowledged(run_dir)
    # Resume on the GPU: the checkpoint is loaded on the CPU and moved; training goes on from it.
    lines.clear()
    resumed = Driver(load_config(PRESET, settings + ["train.budget_env_steps=1600"]), run_dir, resume=True,
                     log=lines.append, show_progress=False).run()
    assert resumed["env_steps"] >= 1600 and resumed["updates"] > summary["updates"]
    assert "learner died" not in "\n".join(lines), lines
    restored = [r["learner/restored_updates"] for r in records(run_dir) if r.get("learner/restored_updates", -1) >= 0]
    assert restored and restored[0] >= summary["updates"] - load_config(PRESET).train.checkpoint_every
