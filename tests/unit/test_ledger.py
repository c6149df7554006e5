"""The run ledger and the evaluation schedule: counts, progress.json, summary, without Ray."""

import json

import pytest

from cluster.ledger import LEARNER_GIVE_UP, PROGRESS, EvalSchedule, LedgerError, RunLedger, RunState
from common.config import load_config

PRESET = "dmc-cartpole-swingup+debug"


def result(*episodes, **metrics):
    """An actor's collect() result with episodes given as (id, env_steps, return)."""
    return {"episodes": [{"id": id_, "env_steps": steps, "return": ret, "length": steps // 8, "policy_version": 3,
                          "seed": 11, "stored": True} for id_, steps, ret in episodes],
            "metrics": {"actor/plan_ms": 2.0, **metrics}}


def test_every_reported_episode_counts_once_towards_the_budget():
    ledger = RunLedger(budget_env_steps=1000, actors=2, envs_per_actor=1)
    records = ledger.record(0, result(("a", 400, 1.0), ("b", 400, 3.0)))
    assert [r["episode"] for r in records] == ["a", "b"] and [r["env_steps"] for r in records] == [400, 800]
    assert records[0]["metrics"]["actor/policy_version"] == 3 and records[0]["metrics"]["actor/plan_ms"] == 2.0
    assert not ledger.budget_spent
    assert ledger.record(1, result(("a", 400, 1.0))) == [], "an episode reported again is not counted again"
    assert ledger.state.env_steps == 800 and ledger.state.episodes == 2
    ledger.record(1, result(("c", 200, 5.0)))
    assert ledger.budget_spent and ledger.acknowledged == {"a", "b", "c"}
    assert ledger.recent_return == pytest.approx(3.0)
    assert ledger.actor_stats[0]["actor/episodes"] == 2 and ledger.actor_stats[1]["actor/env_steps"] == 200


def test_an_unstored_episode_counts_but_is_not_acknowledged():
    ledger = RunLedger(budget_env_steps=1000, actors=1, envs_per_actor=1)
    unstored = result(("a", 100, 0.0))
    unstored["episodes"][0]["stored"] = False
    ledger.record(0, unstored)
    assert ledger.state.episodes == 1 and ledger.acknowledged == set()


def test_a_lost_actor_is_called_again_with_its_next_incarnation():
    ledger = RunLedger(budget_env_steps=1000, actors=2, envs_per_actor=3)
    assert ledger.actor_lost(1) == 1 and ledger.actor_lost(1) == 2
    assert ledger.incarnation == [0, 2] and ledger.lost_episodes == 6 and ledger.actor_restarts == 2
    assert ledger.actor_stats[1]["actor/restarts"] == 2 and ledger.actor_stats[1]["actor/lost_episodes"] == 6


def test_a_learner_that_keeps_dying_without_an_update_is_given_up():
    ledger = RunLedger(budget_env_steps=1000, actors=1, envs_per_actor=1)
    assert not any(ledger.learner_died(updates=u) for u in (10, 20, 30, 40, 50, 60)), "progress in between: ride out"
    verdicts = [ledger.learner_died(updates=60) for _ in range(LEARNER_GIVE_UP - 1)]
    assert verdicts == [False] * (LEARNER_GIVE_UP - 2) + [True]
    assert ledger.learner_restarts == 6 + LEARNER_GIVE_UP - 1


def test_driver_metrics_and_summary():
    ledger = RunLedger(budget_env_steps=500, actors=1, envs_per_actor=1, state=RunState(env_steps=100, episodes=1))
    ledger.record(0, result(("x", 400, 2.5)))
    ledger.redis_restarted()
    metrics = ledger.driver_metrics(started_at=12.0)
    assert metrics["driver/env_steps"] == 500 and metrics["driver/budget_env_steps"] == 500
    assert metrics["driver/redis_restarts"] == 1 and metrics["driver/acknowledged_episodes"] == 1
    assert metrics["driver/recent_return"] == 2.5 and metrics["driver/start_time_s"] == 12.0
    summary = ledger.summary("runs/x", updates=7, evaluation={"return_mean": 1.0}, started_at=12.0)
    assert summary["env_steps"] == 500 and summary["episodes"] == 2 and summary["updates"] == 7
    assert summary["eval"] == {"return_mean": 1.0} and summary["driver/redis_restarts"] == 1


def test_progress_round_trips_and_resume_counts_a_session(tmp_path):
    cfg = load_config(PRESET)
    assert RunState.load(tmp_path) is None
    ledger = RunLedger.open(tmp_path, cfg, resume=False)
    ledger.record(0, result(("a", 200, 1.0)))
    ledger.state.preset = PRESET
    ledger.save(tmp_path)
    assert json.loads((tmp_path / PROGRESS).read_text()) == {"env_steps": 200, "episodes": 1, "session": 0,
                                                             "preset": PRESET}
    again = RunLedger.open(tmp_path, cfg, resume=True)
    assert (again.state.env_steps, again.state.session, again.state.preset) == (200, 1, PRESET)
    assert RunLedger.open(tmp_path, cfg, resume=False).state.env_steps == 0, "a new run does not read progress"


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"env_steps": "many"}', '{"env_steps": -5}',
                                  '{"env_steps": 1, "surprise": 2}', '{"env_steps": true}'])
def test_damaged_progress_is_one_clear_error(tmp_path, text):
    (tmp_path / PROGRESS).write_text(text)
    with pytest.raises(LedgerError, match="progress.json is damaged") as error:
        RunState.load(tmp_path)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300
    assert (tmp_path / PROGRESS).read_text() == text, "nothing is changed"


def test_eval_schedule():
    schedule = EvalSchedule(every=1000, env_steps=2500)  # a resumed run: the next multiple
    assert not schedule.due(2999, busy=False) and schedule.due(3000, busy=False)
    assert not schedule.due(3200, busy=True), "one evaluation at a time"
    schedule.started(4100)  # a late start is not made up twice
    assert not schedule.due(4900, busy=False) and schedule.due(5000, busy=False)
    never = EvalSchedule(every=0)
    assert not never.due(10**9, busy=False)
    budgeted = EvalSchedule(every=1000, budget=3000)  # the final evaluation covers the budget's point
    assert budgeted.due(2000, busy=False) and not budgeted.due(3000, busy=False) and not budgeted.due(3400, busy=False)
