"""`orrery evaluate-model RUN_DIR` as a user runs it: a saved run's world model scored on held-out Atari episodes."""

import json

from common.config import load_config, to_yaml
from learner import checkpoint
from learner.learner import Learner
from tests.e2e.test_cli import orrery


def make_run(tmp_path, family, jump):
    cfg = load_config("atari-mspacman+debug", ["model.cnn_depth=2", f"model.family={family}", f"model.jump={jump}"])
    run_dir = tmp_path / f"{family}-j{jump}"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    checkpoint.save(run_dir / "checkpoints", Learner(cfg, 9, discrete=True, seed=0).state_dict())
    return run_dir


def test_evaluate_model_reports_likelihood_per_step_and_rollout_speed(tmp_path):
    run_dir = make_run(tmp_path, "sssm", 2)
    result = orrery("evaluate-model", str(run_dir), "--episodes", "1", "--windows", "4", "--samples", "2")
    assert result.returncode == 0, result.stderr
    assert "bits per pixel dimension" in result.stdout and "agent steps/s latent" in result.stdout
    report = json.loads((run_dir / "eval" / "model.json").read_text())
    assert report["family"] == "sssm" and report["jump"] == 2 and report["nll"]["steps"] == [2, 4]  # debug horizon 4
    assert all(0 < bits < 8 for bits in report["nll"]["bits_per_dim"])
    assert set(report["speed"]) == {"1", "32"} and report["speed"]["32"]["latent_steps_per_s"] > 0


def test_evaluate_model_without_a_checkpoint_is_a_usage_error(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(load_config("atari-mspacman+debug")))
    result = orrery("evaluate-model", str(run_dir))
    assert result.returncode == 2 and "no checkpoint" in result.stderr and len(result.stderr.strip().splitlines()) == 1
