"""The whole loop learns, through the CLI: actors, replay, learner, weight broadcast, CEM planning.

``orrery train --preset synthetic-reach`` (what `make run` trains) on a real local Ray and embedded Redis:
its final evaluation (10 episodes, no exploration noise) must beat the random policy's 10 episodes by 3x
and beyond both spreads. The margin is what a broken loop does not reach: a planner that maximises the wrong
sign, a replay whose actions are shifted a step against the frames (the model then learns no action effect),
weights that never reach the actors, a reward head that is not trained — each plans no better than random
wandering (13 +- 13 of 100; steering straight to the centre collects 97). The model-only learning tests
(test_learning.py, test_fast_models_learning.py) guard the world model; this one guards everything around it.
"""

import json

import pytest

from tests.e2e.train_support import orrery

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # about 6 minutes on 2 cores
def test_planning_on_the_learned_model_clearly_beats_a_random_policy(tmp_path):
    run_dir = tmp_path / "reach"
    result = orrery("train", "--preset", "synthetic-reach", "--actors", "1", "--run-dir", str(run_dir),
                    "--metrics-port", "-1", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    evaluation = json.loads((run_dir / "summary.json").read_text())["eval"]
    planned, planned_std = evaluation["return_mean"], evaluation["return_std"]
    random, random_std = evaluation["random_return_mean"], evaluation["random_return_std"]
    assert len(evaluation["returns"]) == len(evaluation["random_returns"]) == 10
    assert planned > 3 * random and planned - planned_std > random + random_std, evaluation
    assert "planning clearly beats the random policy" in result.stderr + result.stdout
