"""scripts/profile-run.py: parsing py-spy's raw stacks, finding each thread's samples, the categories and shares."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pr():
    spec = importlib.util.spec_from_file_location("profile_run", ROOT / "scripts" / "profile-run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["profile_run"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("profile_run", None)


# Frames as py-spy 0.4 writes them for Python 3.11 (qualified names, short file names).
RAY_MAIN = "<module> (ray/_private/workers/default_worker.py:289);Worker.main_loop (ray/_private/worker.py:946)"
EXECUTOR = ("FunctionActorManager._make_actor_method_executor.<locals>.actor_method_executor "
            "(ray/_private/function_manager.py:740);"
            "_inject_tracing_into_class.<locals>.span_wrapper.<locals>._resume_span (ray/util/tracing/tracing_helper.py:487)")
GC_THREAD = ("Thread._bootstrap (threading.py:995);Thread._bootstrap_inner (threading.py:1038);"
             "PythonGCThread.run (ray/_private/gc_collect_manager.py:40);Event.wait (threading.py:629);"
             "Condition.wait (threading.py:331)")
TRAIN = f"{EXECUTOR};LearnerWorker.train (learner/worker.py:96)"
UPDATE = f"{TRAIN};Learner.update (learner/learner.py:73)"
PREFETCH = ("Thread._bootstrap (threading.py:995);Thread._bootstrap_inner (threading.py:1038);"
            "Thread.run (threading.py:975);Prefetcher._work (replay/prefetch.py:139)")
COLLECT = f"{RAY_MAIN};{EXECUTOR};ActorWorker.collect (actors/worker.py:80)"
STEP = f"{COLLECT};Actor.run_episodes (actors/actor.py:95);Actor.step (actors/actor.py:72)"

LEARNER_RAW = "\n".join([
    f"{RAY_MAIN} 500",  # the learner's main thread: idle in Ray's loop, not the training thread
    f"{GC_THREAD} 500",
    f"{UPDATE};Learner._loss (learner/learner.py:93);model_loss (learner/objectives.py:105);"
    "Conv2d._conv_forward (torch/nn/modules/conv.py:543) 200",
    f"{UPDATE};Tensor.backward (torch/_tensor.py:623);backward (torch/autograd/__init__.py:395);"
    "_engine_run_backward (torch/autograd/graph.py:841) 150",
    f"{UPDATE};Optimizer.profile_hook_step.<locals>.wrapper (torch/optim/optimizer.py:514);"
    "record_function.__exit__ (torch/autograd/profiler.py:951) 10",
    f"{UPDATE};_no_grad.<locals>._no_grad_wrapper (torch/nn/utils/clip_grad.py:41);"
    "clip_grad_norm_ (torch/nn/utils/clip_grad.py:230) 10",
    f"{UPDATE};Learner._prepare (learner/learner.py:128);"
    "preprocess_observation (common/envs/preprocess.py:21) 40",
    f"{TRAIN};{EXECUTOR.split(';')[1]};LearnerWorker.publish (learner/worker.py:71);"
    "Worker.get_objects (ray/_private/worker.py:900) 20",
    f"{TRAIN};LearnerWorker.save_checkpoint (learner/worker.py:76);save (learner/checkpoint.py:45) 10",
    f"{TRAIN};Prefetcher.get (replay/prefetch.py:90);Queue.get (queue.py:180);Condition.wait (threading.py:331) 50",
    f"{TRAIN} 10",
    f"{PREFETCH};Queue.put (queue.py:149);Condition.wait (threading.py:331) 300",
    f"{PREFETCH};SamplesPerInsert.wait_sample (replay/limiter.py:152);SamplesPerInsert._wait (replay/limiter.py:190) 100",
    f"{PREFETCH};SequenceReplay.sample (replay/store.py:221);SequenceReplay._sample (replay/store.py:248) 80",
    f"{PREFETCH};Learner.stage (learner/learner.py:105) 20",
    "",
])

ACTOR_RAW = "\n".join([
    f"{RAY_MAIN} 100",  # between two collect calls: the actor's idle time
    f"{GC_THREAD} 1000",
    f"{STEP};Actor._act (actors/actor.py:123);CEMPlanner.plan (actors/planner.py:121);"
    "CEMPlanner._gaussian_iteration (actors/planner.py:160);GRUCell.forward (learner/networks.py:40) 400",
    f"{STEP};Actor._update_belief (actors/actor.py:152);WorldModel.observe_step (learner/world_model.py:95) 50",
    f"{STEP};PixelEnv.step (common/envs/base.py:112);DMCEnv._render (common/envs/dmc.py:69);"
    "Camera._render_on_gl_thread (dm_control/mujoco/engine.py:700) 150",
    f"{STEP};ActorWorker._write (actors/worker.py:132);SequenceReplay.add (replay/store.py:140) 30",
    f"{COLLECT};ActorWorker._refresh_weights (actors/worker.py:121);Actor.load_weights (actors/actor.py:65) 20",
    f"{COLLECT};ActorWorker._wait_for_learner (actors/worker.py:111);"
    "SamplesPerInsert.wait_insert (replay/limiter.py:156);SamplesPerInsert._wait (replay/limiter.py:190) 200",
    f"{STEP};EpisodeRecorder.build (common/episode.py:80) 50",
])


def test_parse_raw_reads_frames_and_counts(pr):
    stacks = pr.parse_raw("a (x/a.py:1);CEMPlanner.plan (actors/planner.py:121) 7\n\nnot a stack\nno_location 3\n")
    assert len(stacks) == 2
    frames, count = stacks[0]
    assert count == 7
    assert frames == (pr.Frame("a", "x/a.py", 1), pr.Frame("CEMPlanner.plan", "actors/planner.py", 121))
    assert frames[1].name == "plan"
    assert stacks[1] == ((pr.Frame("no_location", "", 0),), 3)
    # Names with spaces and brackets, a file without a line number.
    assert pr.parse_frame("<listcomp> (replay/checksum.py:12)") == pr.Frame("<listcomp>", "replay/checksum.py", 12)
    assert pr.parse_frame("f (some file.py)") == pr.Frame("f", "some file.py", 0)


def test_learner_training_thread_only(pr):
    counts = pr.bucket("learner", pr.parse_raw(LEARNER_RAW))
    assert counts == {"update: forward": 200, "update: backward": 150, "update: optimiser": 20,
                      "update: batch prep": 40, "publishing weights": 20, "checkpoint": 10,
                      "waiting (limiter / idle)": 50, "other": 10}
    share = pr.shares(counts)
    assert share["update: forward"] == pytest.approx(40.0)
    assert sum(share.values()) == pytest.approx(100.0)


def test_prefetch_thread_and_its_busy_share(pr):
    counts = pr.bucket("prefetch", pr.parse_raw(LEARNER_RAW))
    assert counts == {"replay sampling": 80, "staging batch": 20, "waiting for the limiter": 100,
                      "waiting for queue space": 300, "other": 0}
    assert pr.busy("prefetch", counts) == pytest.approx(20.0)


def test_actor_main_thread_with_its_idle_time(pr):
    counts = pr.bucket("actor", pr.parse_raw(ACTOR_RAW))
    assert counts == {"planning": 400, "belief update": 50, "env step + render": 150, "replay write": 30,
                      "loading weights": 20, "waiting for the learner": 200, "idle": 100, "other": 50}
    share = pr.shares(counts)
    assert share["planning"] == pytest.approx(40.0) and share["idle"] == pytest.approx(10.0)


def test_idle_main_loop_is_not_counted_when_the_entry_runs_elsewhere(pr):
    # The learner trains on a Ray worker thread: its main thread's idle loop is another thread's time.
    counts = pr.bucket("learner", pr.parse_raw(f"{RAY_MAIN} 900\n{UPDATE} 100\n"))
    assert sum(counts.values()) == 100 and counts["other"] == 100
    # An actor that has not entered collect during the profile has no samples at all (no role thread seen).
    assert sum(pr.bucket("actor", pr.parse_raw(f"{RAY_MAIN} 900\n")).values()) == 0
    assert pr.shares(pr.bucket("actor", [])) == dict.fromkeys(pr.ROLES["actor"].categories, 0.0)


def test_an_unlisted_wait_goes_to_the_wait_category(pr):
    counts = pr.bucket("learner", pr.parse_raw(f"{TRAIN};Event.wait (threading.py:629) 5\n"))
    assert counts["waiting (limiter / idle)"] == 5
    assert pr.is_waiting((pr.Frame("Queue.get", "/usr/lib/python3.11/queue.py", 180),))
    assert not pr.is_waiting((pr.Frame("Learner.update", "learner/learner.py", 73),))


def test_find_targets(pr):
    ps = "\n".join([
        "    1 /sbin/init",
        "  300 /work/main/.venv/bin/python .venv/bin/orrery train --preset dmc-cheetah-run+cpu --run-dir /tmp/r",
        "  310 ray::LearnerWorker",
        "  322 ray::ActorWorker.collect",
        "  321 ray::ActorWorker",
        "  330 ray::WeightStore",
        "  331 ray::ActorWorkerish",
        "  340 python scripts/profile-run.py --seconds 40",
    ])
    targets = pr.find_targets(ps, own_pid=340)
    assert targets == [pr.Target("learner", "learner", 310), pr.Target("actor 0", "actor", 321),
                       pr.Target("actor 1", "actor", 322), pr.Target("driver", "driver", 300)]
    assert pr.find_targets("  5 /usr/bin/python -m orrery.report\n", own_pid=1) == []


def test_profile_report_and_table(pr):
    targets = [pr.Target("learner", "learner", 310), pr.Target("actor 0", "actor", 321)]
    report = pr.profile(targets, {targets[0]: LEARNER_RAW, targets[1]: ACTOR_RAW}, seconds=40)
    json.loads(json.dumps(report))
    assert report["seconds"] == 40
    assert report["processes"]["learner"]["update: forward"] == 40.0
    assert report["processes"]["actor 0"]["planning"] == 40.0
    assert report["prefetch thread busy %"] == {"learner": 20.0}
    text = pr.render(report)
    assert "learner (pid 310, 500 samples over 40 s)" in text
    assert "update: forward            40.0 %    16.0 s" in text
    assert "learner prefetch thread: busy 20.0 %" in text


def test_error_line(pr):
    stderr = ("Error: Failed to get process executable name. Check that the process is running.\n\nCaused by:\n"
              "    0: No such file or directory (os error 2)\n\nStack backtrace:\n   0: anyhow::context\n")
    assert pr.error_line(stderr) == "Error: Failed to get process executable name. Check that the process is running."
    assert pr.error_line("permission denied\n\n") == "permission denied"


def test_missing_py_spy_and_no_run(pr, monkeypatch, capsys):
    monkeypatch.setattr(pr, "find_py_spy", lambda: None)
    assert pr.main(["--seconds", "1"]) == 2
    assert capsys.readouterr().out.strip() == "py-spy is not installed: pip install py-spy (into this virtualenv)"
    monkeypatch.setattr(pr, "find_py_spy", lambda: "/nonexistent/py-spy")
    monkeypatch.setattr(pr, "ps_output", lambda: "  1 /sbin/init\n")
    assert pr.main(["--seconds", "1"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no running run was found" in out[0] and "orrery train" in out[0]
