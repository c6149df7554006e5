"""The sweep's plan, bookkeeping and resource arithmetic (cluster/sweep.py, resources.py), and submit.py's argv."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from cluster import resources
from cluster.cli import main
from cluster.submit import cluster_argv, read_env_file
from cluster.sweep import (
    SweepError, SweepSpec, SweepState, format_summary, parse_seeds, parse_tasks, plan_runs, report_inputs, summarise,
)
from common.config import ConfigError, load_config
from common.envs.tasks import UnknownTaskError

ROOT = Path(__file__).resolve().parents[2]
PRESET = "dmc-cartpole-swingup+debug"


@pytest.mark.parametrize("text, seeds", [("0:3", (0, 1, 2)), ("5:7", (5, 6)), ("4", (4,)), ("0,3,7", (0, 3, 7))])
def test_seed_ranges(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0-10", "a:b", "5:2", "3:3", "-1:2", "1,1", "", "0:10:x"])
def test_malformed_seed_ranges_are_refused(text):
    with pytest.raises(SweepError, match="--seeds"):
        parse_seeds(text)


def test_tasks_default_to_dmc_and_are_checked_for_form():
    assert parse_tasks(["cheetah-run", "atari:MsPacman"]) == ("dmc:cheetah-run", "atari:MsPacman")
    with pytest.raises(UnknownTaskError, match="family:name"):
        parse_tasks(["mujoco:ant"])
    with pytest.raises(SweepError, match="twice"):
        parse_tasks(["cheetah-run", "dmc:cheetah-run"])


def test_each_task_and_seed_is_its_own_run_with_a_unique_namespace():
    spec = SweepSpec(PRESET, (0, 1), parse_tasks(["cheetah-run", "walker-walk"]), ("env.action_repeat=3",))
    runs = plan_runs(spec, "sw")
    assert [run.name for run in runs] == ["sw-dmc_cheetah-run-s0", "sw-dmc_cheetah-run-s1",
                                          "sw-dmc_walker-walk-s0", "sw-dmc_walker-walk-s1"]
    cfg = runs[2].config(PRESET)
    assert (cfg.env.task, cfg.train.seed, cfg.model.deter_size) == ("dmc:walker-walk", 0, 32)
    assert cfg.env.action_repeat == 3, "the user's overrides win over the task's own action repeat"
    plain = plan_runs(SweepSpec(PRESET, (0,), parse_tasks(["walker-walk"])), "sw")[0].config(PRESET)
    assert plain.env.action_repeat == 2, "PlaNet's action repeat of the task, not the preset's task's"
    assert plan_runs(SweepSpec(PRESET, (4,)), "sw")[0].config(PRESET).env.task == "dmc:cartpole-swingup"
    assert runs[0].config(PRESET, "redis://:pw@10.0.0.1:6390/0").replay.url.endswith("6390/0")


@pytest.mark.parametrize("override, words", [("replay.url=redis://:pw@h:1/0", "--redis"),
                                             ("cluster.metrics_port=9400", "free one")])
def test_overrides_a_sweep_cannot_share_are_refused(override, words):
    with pytest.raises(SweepError, match=words):
        plan_runs(SweepSpec(PRESET, (0, 1), (), (override,)), "sw")


# ---------------------------------------------------------------- resources

LOCAL = [resources.NodeShape("local", {"CPU": 10.0, "memory": 1e10})]


def cluster_yaml_shapes() -> list[resources.NodeShape]:
    """deploy/cluster.yaml as the autoscaler sees it, with its head up."""
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(copy.deepcopy(yaml.safe_load((ROOT / "deploy" / "cluster.yaml").read_text())))
    head = {"Alive": True, "NodeManagerAddress": "head", "Resources": {"CPU": 0.0, resources.DRIVER_SLOT: 12.0}}
    return resources.node_shapes([head], config)


def test_a_run_is_one_bundle_per_process_and_pins_each_role():
    cfg = load_config(PRESET, ["cluster.actors=3"])
    bundles = resources.run_bundles(cfg, LOCAL)
    assert bundles == [{"CPU": 1.0}] * 5
    assert [resources.bundle_index(role, i) for role, i in [("store", 0), ("learner", 0), ("actor", 0), ("actor", 2)]] \
        == [0, 1, 2, 4]
    assert resources.strategy(cfg) == "STRICT_PACK"
    assert resources.strategy(load_config(PRESET, ["replay.url=redis://:p@h:1/0"])) == "PACK"


def test_gpus_and_driver_slots_where_the_cluster_has_them():
    cfg = load_config("dmc-cheetah-run", ["cluster.actors=2", "cluster.actor_gpus=0.25", "cluster.learner_gpus=1"])
    bundles = resources.run_bundles(cfg, cluster_yaml_shapes())
    assert bundles == [{resources.DRIVER_SLOT: 1.0}, {"CPU": 1.0, "GPU": 1.0}] + [{"CPU": 1.0, "GPU": 0.25}] * 2
    cpu_only = resources.run_bundles(cfg, LOCAL)
    assert all("GPU" not in bundle for bundle in cpu_only), "a CPU-only cluster trains on CPU, as orrery train does"


def test_auto_gpu_shares_put_a_run_on_one_gpu_with_room_for_an_evaluation():
    one_gpu = [resources.NodeShape("gpu node", {"CPU": 16.0, "GPU": 1.0})]
    cfg = load_config("dmc-cheetah-run", ["cluster.actors=4", "train.eval_every_env_steps=10000"])
    shares = resources.gpu_shares(cfg, 1.0)
    assert (shares.learner, shares.actor, shares.evaluation) == (0.5, 0.1, 0.1)
    bundles = resources.run_bundles(cfg, one_gpu)
    assert bundles[1:] == [{"CPU": 1.0, "GPU": 0.5}] + [{"CPU": 1.0, "GPU": 0.1}] * 4 + [{"GPU": 0.1}]
    assert resources.total(bundles)["GPU"] <= 1.0
    resources.check_feasible(bundles[1:], "STRICT_PACK", one_gpu, where="this node")
    # Five actors: 0.5 / 6 each, rounded down to Ray's resolution, never over the GPU.
    odd = resources.gpu_shares(load_config("dmc-cheetah-run", ["cluster.actors=5"]), 1.0)
    assert odd.actor == pytest.approx(0.0833) and odd.learner + 6 * odd.actor <= 1.0
    # Actors on the CPU: the learner takes the whole GPU; a learner on the CPU leaves the GPU to the actors.
    assert resources.gpu_shares(load_config("dmc-cheetah-run", ["cluster.actor_gpus=0"]), 1.0) == \
        resources.GpuShares(1.0, 0.0, 0.0)
    assert resources.gpu_shares(load_config("dmc-cheetah-run", ["cluster.learner_gpus=0", "cluster.actors=3"]),
                                1.0) == resources.GpuShares(0.0, 0.25, 0.25)
    # No GPU anywhere: everything on the CPU whatever the config asks; the CPU presets ask for none.
    assert resources.gpu_shares(load_config("dmc-cheetah-run", ["cluster.learner_gpus=1"]), 0.0) == resources.GpuShares()
    assert resources.gpu_shares(load_config("dmc-cheetah-run+cpu"), 1.0) == resources.GpuShares()
    # Without evaluations during training no evaluation bundle is held (the final one uses the actors' room).
    assert len(resources.run_bundles(load_config("dmc-cheetah-run", ["cluster.actors=4"]), one_gpu)) == 6
    assert resources.bundle_index("evaluation", 0) == -1


def test_gpu_shares_that_do_not_fit_one_node_are_refused_before_launch():
    one_gpu = [resources.NodeShape("this node", {"CPU": 16.0, "GPU": 1.0})]
    cfg = load_config("dmc-cheetah-run", ["cluster.actors=4", "cluster.learner_gpus=1", "cluster.actor_gpus=0.1"])
    with pytest.raises(resources.ResourceError, match=r"add up to 1.4 GPU \(1 \+ 0.1 \+ 0.1 \+ 0.1 \+ 0.1\).*"
                                                      r"cluster.learner_gpus / cluster.actor_gpus"):
        resources.check_feasible(resources.run_bundles(cfg, one_gpu)[1:], "STRICT_PACK", one_gpu, where="this node")
    with pytest.raises(ConfigError, match="cluster.actor_gpus must be a number or 'auto'"):
        load_config("dmc-cheetah-run", ["cluster.actor_gpus=half"])


def test_runs_no_node_can_hold_are_refused_with_the_reason():
    too_many = load_config(PRESET, ["cluster.actors=9"])
    with pytest.raises(resources.ResourceError, match="11 CPU on one node.*--actors-per-run"):
        resources.check_feasible(resources.run_bundles(too_many, LOCAL), "STRICT_PACK", LOCAL)
    resources.check_feasible(resources.run_bundles(load_config(PRESET, ["cluster.actors=8"]), LOCAL), "STRICT_PACK",
                             LOCAL)
    shapes = cluster_yaml_shapes()
    big = load_config("dmc-cheetah-run", ["cluster.actors=64", "replay.url=redis://:p@h:1/0"])
    resources.check_feasible(resources.run_bundles(big, shapes), "PACK", shapes)  # spread over workers: fine
    two_gpus = load_config("dmc-cheetah-run", ["cluster.learner_gpus=2", "replay.url=redis://:p@h:1/0"])
    with pytest.raises(resources.ResourceError, match="2 GPU"):
        resources.check_feasible(resources.run_bundles(two_gpus, shapes), "PACK", shapes)
    huge = load_config("dmc-cheetah-run", ["cluster.actors=400", "replay.url=redis://:p@h:1/0"])
    with pytest.raises(resources.ResourceError, match="whole cluster"):
        resources.check_feasible(resources.run_bundles(huge, shapes), "PACK", shapes)
    # An embedded Redis: the GPU learner and the driver slot would have to share one node.
    with pytest.raises(resources.ResourceError, match="one node"):
        resources.check_feasible(resources.run_bundles(load_config("dmc-cheetah-run"), shapes), "STRICT_PACK", shapes)


def test_node_types_with_auto_detected_resources_are_not_second_guessed():
    shapes = LOCAL + [resources.NodeShape("worker", {}, 4, known=False)]
    cfg = load_config(PRESET, ["cluster.actors=40"])
    resources.check_feasible(resources.run_bundles(cfg, shapes), "STRICT_PACK", shapes)


# ---------------------------------------------------------------- sweep.json and the end

def fake_run(run_dir: Path, eval_return: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"env_steps": 0}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"eval": {"return_mean": eval_return,
                                                               "random_return_mean": 1.0}}))


def test_state_round_trips_and_a_sweep_directory_is_never_reused(tmp_path):
    spec = SweepSpec(PRESET, (0, 1, 2), parse_tasks(["cheetah-run"]), ("cluster.actors=1",), cluster_replay=True)
    state = SweepState.new(tmp_path / "sw", spec)
    assert not (tmp_path / "sw").exists(), "nothing is written before the checks"
    state.mark("sw-dmc_cheetah-run-s1", state="done", attempts=2)
    again = SweepState.load(tmp_path / "sw")
    assert again.spec == spec and again.runs["sw-dmc_cheetah-run-s1"]["attempts"] == 2
    assert "redis://" not in (tmp_path / "sw" / "sweep.json").read_text()
    with pytest.raises(SweepError, match="--resume"):
        SweepState.new(tmp_path / "sw", spec)
    with pytest.raises(SweepError, match="no sweep.json"):
        SweepState.load(tmp_path)


def test_summary_is_mean_and_std_over_seeds_per_task(tmp_path):
    spec = SweepSpec(PRESET, (0, 1, 2), parse_tasks(["cheetah-run", "walker-walk"]))
    state = SweepState.new(tmp_path / "sw", spec)
    for name, value in [("sw-dmc_cheetah-run-s0", 10.0), ("sw-dmc_cheetah-run-s1", 20.0), ("sw-dmc_walker-walk-s2", 5)]:
        fake_run(state.run_dir(name), value)
    rows = summarise(state)
    assert [(r["task"], r["finished"], r["runs"], r["return_mean"], r["return_std"]) for r in rows] == [
        ("dmc:cheetah-run", 2, 3, 15.0, 5.0), ("dmc:walker-walk", 1, 3, 5.0, 0.0)]
    table = format_summary(rows)
    assert "15.0 ± 5.0" in table and "2/3" in table and "mean ± std over seeds" in table.splitlines()[0]


def test_report_over_a_sweep_means_over_its_runs(tmp_path):
    state = SweepState.new(tmp_path / "sw", SweepSpec(PRESET, (0, 1)))
    state.save()
    with pytest.raises(SweepError, match="no run of this sweep"):
        report_inputs([tmp_path / "sw"])
    fake_run(state.run_dir("sw-dmc_cartpole-swingup-s1"), 3.0)
    assert report_inputs([tmp_path / "sw"]) == ([state.run_dir("sw-dmc_cartpole-swingup-s1")], tmp_path / "sw")
    assert report_inputs([tmp_path / "a", tmp_path / "b"]) == ([tmp_path / "a", tmp_path / "b"], None)


@pytest.mark.parametrize("args, words", [
    (["--seeds", "5:2"], "--seeds"),
    (["--seeds", "0:3", "--tasks", "mujoco:ant"], "unknown task"),
    (["--preset", "nosuch", "--seeds", "0:2"], "unknown preset"),
    ([], "--seeds is required"),
])
def test_bad_input_exits_2_before_ray_starts(args, words, capsys, tmp_path):
    assert main(["sweep", *args, "--sweep-dir", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orrery sweep: error:") and words in err[0]
    assert not (tmp_path / "sw").exists()


# ---------------------------------------------------------------- cluster/submit.py

def test_submit_wires_train_and_sweep_to_the_cluster(tmp_path):
    env_file = tmp_path / "head.env"
    env_file.write_text("# written by start-replay.sh\nORRERY_REPLAY_URL=redis://:pw@10.0.0.5:6390/0\n"
                        "export ORRERY_RUNS='/mnt/orrery/runs'\n")
    env = read_env_file(env_file)
    assert env == {"ORRERY_REPLAY_URL": "redis://:pw@10.0.0.5:6390/0", "ORRERY_RUNS": "/mnt/orrery/runs"}
    assert cluster_argv(["train", "--preset", "p"], env) == [
        "train", "--address", "auto", "--redis", "redis://:pw@10.0.0.5:6390/0", "--preset", "p"]
    assert cluster_argv(["sweep", "--address=10.0.0.5:6379", "--redis", "redis://x"], env) == [
        "sweep", "--address=10.0.0.5:6379", "--redis", "redis://x"]
    assert cluster_argv(["status"], env) == ["status"]
    assert cluster_argv(["train"], {}) == ["train", "--address", "auto"]
    assert read_env_file(tmp_path / "missing") == {}
