"""Time sections (common/timing.py) and the report's profile of a run from them (cluster/profile.py)."""

from __future__ import annotations

import time

import pytest

from cluster.profile import counter_total, time_profile, time_table, wall_seconds
from common.metrics import BY_KEY
from common.timing import Stopwatch


def test_stopwatch_adds_up_sections_and_reports_named_ones_from_the_start():
    watch = Stopwatch(("plan", "env"))
    assert watch.metrics("actor") == {"actor/plan_s": 0.0, "actor/env_s": 0.0}
    for _ in range(3):
        with watch.section("plan"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError):
        with watch.section("env"):  # a section that raises still counts its time
            time.sleep(0.01)
            raise RuntimeError("env died")
    watch.add("write", 0.5)
    seconds = watch.metrics("actor")
    assert 0.03 <= seconds["actor/plan_s"] < 0.5 and 0.01 <= seconds["actor/env_s"] < 0.3
    assert seconds["actor/write_s"] == 0.5


def test_every_section_the_processes_report_is_a_catalogued_counter():
    from actors.actor import ACTOR_SECTIONS
    from learner.worker import LEARNER_SECTIONS

    keys = [f"actor/{s}_s" for s in (*ACTOR_SECTIONS, "weights")] + [f"learner/{s}_s" for s in LEARNER_SECTIONS]
    for key in keys:
        assert key in BY_KEY and BY_KEY[key].kind == "counter", key


def test_counter_total_adds_rises_and_counts_a_fall_as_a_restart_from_zero():
    assert counter_total([]) == 0.0
    assert counter_total([1.0, 3.0, 3.0, 6.0]) == 6.0
    assert counter_total([2.0, 5.0, 1.0, 4.0]) == 9.0  # 5 before the restart, 4 after it


def test_wall_time_sums_driver_sessions_and_leaves_out_the_time_between():
    records = [{"time": 100.0, "driver/start_time_s": 90.0}, {"time": 150.0, "driver/start_time_s": 90.0},
               {"time": 155.0, "actor": 0},  # an episode record carries no session
               {"time": 1000.0, "driver/start_time_s": 990.0}, {"time": 1030.0, "driver/start_time_s": 990.0}]
    assert wall_seconds(records) == pytest.approx(60.0 + 40.0)


def test_profile_gives_each_process_its_shares_of_the_wall_time():
    tick = {"driver/start_time_s": 0.0}
    records = [
        {"time": 10.0, **tick, "learner/update_s": 5.0, "learner/batch_wait_s": 1.0, "learner/publish_s": 0.0,
         "learner/checkpoint_s": 0.0},
        {"time": 50.0, "actor": 0, "actor/plan_s": 20.0, "actor/env_s": 10.0, "actor/observe_s": 1.0,
         "actor/write_s": 1.0, "actor/weights_s": 0.0, "actor/insert_wait_s": 4.0},
        {"time": 60.0, "actor": 1, "actor/plan_s": 30.0, "actor/env_s": 5.0, "actor/observe_s": 0.0,
         "actor/write_s": 0.0, "actor/weights_s": 0.0, "actor/insert_wait_s": 0.0},
        {"time": 70.0, "eval/seconds": 12.0},
        {"time": 100.0, **tick, "learner/update_s": 80.0, "learner/batch_wait_s": 10.0, "learner/publish_s": 2.0,
         "learner/checkpoint_s": 1.0},
        {"time": 90.0, "actor": 0, "actor/plan_s": 40.0, "actor/env_s": 20.0, "actor/observe_s": 2.0,
         "actor/write_s": 2.0, "actor/weights_s": 1.0, "actor/insert_wait_s": 30.0},
        {"time": 95.0, "eval/seconds": 13.0},
    ]
    rows = {row.process: row.shares for row in time_profile(records)}
    assert list(rows) == ["learner", "actor 0", "actor 1", "evaluations (2)"]
    assert rows["learner"] == pytest.approx({"updates": 0.80, "waiting for a batch": 0.10, "publishing weights": 0.02,
                                             "checkpoints": 0.01, "other": 0.07})
    assert rows["actor 0"]["planning"] == pytest.approx(0.40)
    assert rows["actor 0"]["waiting for the learner"] == pytest.approx(0.30)
    assert rows["actor 0"]["other"] == pytest.approx(0.05)
    assert rows["actor 1"]["planning"] == pytest.approx(0.30)
    assert rows["evaluations (2)"] == {"evaluating": pytest.approx(0.25)}
    table = time_table({"run-a": records}).splitlines()
    assert table[0] == "| run | wall time | process | share of the wall time |" and len(table) == 6
    assert table[2] == ("| run-a | 1 min 40 s | learner | updates 80 % · waiting for a batch 10 % · "
                        "publishing weights 2 % · checkpoints 1 % · other 7 % |")


def test_a_run_from_before_the_sections_has_no_profile():
    records = [{"time": 1.0, "driver/start_time_s": 0.0, "learner/updates": 3}, {"time": 2.0, "actor": 0}]
    assert time_profile(records) == []
    assert time_table({"old": records}).count("\n") == 2  # the header only
