"""The ``orrery`` command line.

Commands:
    orrery presets                      list the named presets and their key settings
    orrery env-check TASK               step a task, print frame shape, action space and frames/s
    orrery rollout --preset P           run random-action episodes, save them and a preview
    orrery train --preset P [...]       train with planning actors, the Redis replay and a learner on Ray
    orrery sweep --preset P --seeds A:B many independent runs (seeds x tasks) packed onto the Ray cluster
    orrery eval RUN_DIR                 evaluate a run's latest checkpoint
    orrery evaluate-model RUN_DIR       the checkpoint's world model: prediction likelihood and rollout speed
    orrery report RUN_DIR... [--out D]  plots and an HTML page comparing runs and seeds (or a sweep's runs)
    orrery status                       the runs on this node's Ray cluster and their progress

Bad arguments and bad input exit with code 2 and one line that names the problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from cluster.report import ReportError, write_report
from cluster.resources import ResourceError
from cluster.sweep import SweepError
from common import config as config_lib
from common.envs.tasks import UnknownTaskError, families_help
from common.episode import EpisodeError
from common.fileio import UnsafePathError, write_atomic

USAGE_ERRORS = (config_lib.ConfigError, UnknownTaskError, EpisodeError, ReportError, SweepError, ResourceError,
                UnsafePathError)
DEFAULT_PRESET = "dmc-cartpole-swingup"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orrery", description="World models from pixels, trained and planned with on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    commands.add_parser("presets", help="list presets and their key settings")

    check = commands.add_parser("env-check", help="step a task and report shapes and frames per second")
    check.add_argument("task", help=f"task id: {families_help()}")
    check.add_argument("--steps", type=_positive_int, default=100, help="agent steps to time (default 100)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--action-repeat", type=_positive_int, default=None,
                       help="env steps per agent step (default: the task's, PlaNet's for DMC)")
    check.add_argument("--save-frame", type=Path, default=None, help="write the last frame to this PNG file")

    train = commands.add_parser("train", help="train a world model with planning actors on Ray")
    _add_config_args(train)
    train.add_argument("--actors", type=_positive_int, default=None, help="actor processes (cluster.actors)")
    train.add_argument("--envs-per-actor", type=_positive_int, default=None, help="cluster.envs_per_actor")
    train.add_argument("--run-dir", type=Path, default=None, help="where the run lives (default runs/<preset>-<time>)")
    train.add_argument("--address", default=None, help="Ray address: 'auto' joins a running cluster (cluster.address)")
    train.add_argument("--redis", default=None, metavar="URL", help="replay Redis URL; default: embedded (replay.url)")
    train.add_argument("--budget-steps", type=int, default=None, help="env steps to train for (train.budget_env_steps)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped run")
    train.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                       help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (cluster.metrics_port; "
                            "default: a free port, -1: none)")

    sweep = commands.add_parser("sweep", help="many independent runs (seeds x tasks) packed onto the Ray cluster")
    sweep.add_argument("--preset", default="dmc-cartpole-swingup",
                       help="preset names joined by '+', as for train (every run uses it)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config field of every run (repeatable)")
    sweep.add_argument("--seeds", default=None, metavar="A:B", help="seeds A..B-1 (e.g. 0:10) or a list 0,3,7")
    sweep.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                       help="task ids (dmc:cheetah-run, or just cheetah-run); default: the preset's task")
    sweep.add_argument("--actors-per-run", type=_positive_int, default=None, help="actors of each run (cluster.actors)")
    sweep.add_argument("--envs-per-actor", type=_positive_int, default=None, help="cluster.envs_per_actor")
    sweep.add_argument("--max-concurrent", type=int, default=0, metavar="K",
                       help="runs holding resources at once (default 0: as many as the cluster can hold)")
    sweep.add_argument("--budget-steps", type=int, default=None, help="env steps per run (train.budget_env_steps)")
    sweep.add_argument("--max-retries", type=int, default=2, help="restarts of a failed run from its checkpoint")
    sweep.add_argument("--sweep-dir", type=Path, default=None,
                       help="where the sweep lives (default $ORRERY_RUNS/sweep-<preset>-<time>, ORRERY_RUNS=runs)")
    sweep.add_argument("--resume", type=Path, default=None, metavar="SWEEP_DIR",
                       help="continue a sweep: finished runs are kept, the others continue from their checkpoints")
    sweep.add_argument("--address", default=None,
                       help="Ray address ('auto': the cluster of this node); default: the job's cluster, else local")
    sweep.add_argument("--redis", default=None, metavar="URL",
                       help="one replay Redis for all runs, a namespace each; default: an embedded one per run")

    status = commands.add_parser("status", help="the running runs and their progress, from their metrics")
    status.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    status.add_argument("--prune", action="store_true", help="forget runs whose drivers no longer answer")

    evaluate = commands.add_parser("eval", help="evaluate a run's latest checkpoint")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--episodes", type=_positive_int, default=None, help="default: train.eval_episodes")
    evaluate.add_argument("--device", default="auto",
                          help="where to plan: auto (the GPU where torch can use one, else the CPU), cpu, cuda, cuda:N")

    model_eval = commands.add_parser("evaluate-model", help="a run's world model: per-frame likelihood over a "
                                     "prediction horizon on held-out episodes, and imagined-rollout speed")
    model_eval.add_argument("run_dir", type=Path)
    model_eval.add_argument("--episodes", type=_positive_int, default=2,
                            help="held-out random-policy episodes to collect (default 2)")
    model_eval.add_argument("--episodes-from", type=Path, default=None, metavar="DIR",
                            help="read held-out episodes (*.ep, as orrery rollout writes them) instead")
    model_eval.add_argument("--context", type=_positive_int, default=5, help="observed frames before predicting")
    model_eval.add_argument("--horizon", type=_positive_int, default=None,
                            help="agent steps predicted open loop (default: planner.horizon)")
    model_eval.add_argument("--windows", type=_positive_int, default=32, help="windows scored (default 32)")
    model_eval.add_argument("--samples", type=_positive_int, default=4,
                            help="open-loop samples per window for stochastic models (default 4)")
    model_eval.add_argument("--device", default="auto",
                            help="auto (the GPU where torch can use one, else the CPU), cpu, cuda, cuda:N")

    report = commands.add_parser("report", help="plots and an HTML page comparing runs and seeds")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for report.html and its pictures (default: the RUN_DIR, when there is one)")

    rollout = commands.add_parser("rollout", help="run random-action episodes of a preset and save them")
    _add_config_args(rollout)
    rollout.add_argument("--episodes", type=_positive_int, default=2)
    rollout.add_argument("--run-dir", type=Path, default=None, help="where to write (default runs/rollout-<time>)")
    return parser


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None,
                        help=f"preset names joined by '+', e.g. dmc-cheetah-run+debug (see orrery presets; default "
                             f"{DEFAULT_PRESET})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set train.batch_size=16 (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="run seed (train.seed)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = {"presets": cmd_presets, "env-check": cmd_env_check, "rollout": cmd_rollout, "train": cmd_train,
                   "eval": cmd_eval, "report": cmd_report, "status": cmd_status, "sweep": cmd_sweep,
                   "evaluate-model": cmd_evaluate_model}[args.command]
        return command(args)
    except USAGE_ERRORS + _replay_errors() as error:
        print(f"orrery {args.command}: error: {error}", file=sys.stderr)
        return 2
    except _run_errors() as error:  # the run started and cannot go on: its files stay for --resume
        print(f"orrery {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"orrery {args.command}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- commands

def cmd_presets(args) -> int:
    names = config_lib.preset_names()
    width = max(map(len, names))
    for name in names:
        cfg = config_lib.load_config(name)
        print(f"{name:<{width}}  {config_lib.summary(cfg)}")
    print("\nStack with '+', e.g. --preset dmc-cheetah-run+debug; override with --set section.key=value.")
    return 0


def cmd_env_check(args) -> int:
    import numpy as np

    from common.envs import make_env

    env = make_env(args.task, args.seed, action_repeat=args.action_repeat)
    spec = env.spec
    renderer = f", MuJoCo GL backend {os.environ.get('MUJOCO_GL')}" if spec.task.startswith("dmc:") else ""
    rng = np.random.default_rng(args.seed)
    try:
        frame = env.reset()
        start = time.perf_counter()
        env_steps = 0
        for _ in range(args.steps):
            step = env.step(spec.action.sample(rng))
            frame, env_steps = step.observation, env_steps + step.env_steps
            if step.last:
                frame = env.reset()
        seconds = time.perf_counter() - start
    except Exception as error:  # rendering failures surface here; say how to fix them
        print(f"orrery env-check: error: {spec.task} failed while stepping/rendering: {error}\n"
              f"  headless rendering needs EGL (Debian: apt-get install libegl1 libgl1-mesa-dri) "
              f"or another backend: MUJOCO_GL=osmesa or MUJOCO_GL=glfw", file=sys.stderr)
        return 1
    finally:
        env.close()
    print(f"task          {spec.task}{renderer}")
    print(f"observation   {frame.shape} {frame.dtype}")
    print(f"actions       {spec.action.describe()}")
    print(f"action repeat {spec.action_repeat} (episode: {spec.episode_steps} agent steps, "
          f"{spec.max_env_steps} env steps)")
    print(f"speed         {args.steps / seconds:.1f} frames/s, {env_steps / seconds:.1f} env steps/s "
          f"({args.steps} agent steps in {seconds:.2f} s, rendering included)")
    if args.save_frame:
        from common.images import write_png

        print(f"frame         {write_png(args.save_frame, frame)}")
    return 0


def cmd_rollout(args) -> int:
    import numpy as np

    from actors.rollout import random_policy, run_episode
    from common.envs import make_env_from_config
    from common.episode import encode
    from common.images import frame_grid, write_png

    cfg = _load(args)
    run_dir = args.run_dir or Path("runs") / time.strftime("rollout-%Y%m%d-%H%M%S")
    (run_dir / "episodes").mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", config_lib.to_yaml(config_lib.redacted(cfg)))
    run = run_dir.name
    seed = cfg.train.seed
    env = make_env_from_config(cfg.env, seed)
    spec = env.spec
    print(f"orrery rollout: {spec.task}, {spec.action.describe()}, repeat {spec.action_repeat}, "
          f"{args.episodes} episode(s) of up to {spec.episode_steps} steps, random actions -> {run_dir}")
    returns, total_steps, total_seconds = [], 0, 0.0
    try:
        for index in range(args.episodes):
            progress = _Progress(f"episode {index + 1}/{args.episodes}", spec.episode_steps)
            start = time.perf_counter()
            episode = run_episode(env, random_policy(spec.action, seed * 1000 + index), run=run, seed=seed,
                                  index=index, on_step=progress.update)
            seconds = time.perf_counter() - start
            progress.done()
            path = run_dir / "episodes" / f"{episode.info.episode_id}.ep"
            write_atomic(path, encode(episode))
            returns.append(float(episode.rewards.sum()))
            total_steps += episode.info.env_steps
            total_seconds += seconds
            print(f"episode {index + 1}: return {returns[-1]:8.2f}  length {episode.length} steps "
                  f"({episode.info.env_steps} env steps)  {episode.info.env_steps / seconds:6.1f} env steps/s  "
                  f"-> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
            if index == 0:
                write_png(run_dir / "episode-0.png", frame_grid(episode.observations))
    finally:
        env.close()
    print(f"summary: {len(returns)} episode(s), mean return {np.mean(returns):.2f} ± {np.std(returns):.2f}, "
          f"{total_steps / total_seconds:.1f} env steps/s with rendering")
    print(f"results: {run_dir}/ (config.yaml, episodes/*.ep, episode-0.png: frames of the first episode)")
    return 0


def cmd_train(args) -> int:
    from cluster.driver import Driver
    from cluster.preflight import resume_config

    overrides = list(args.overrides)
    for flag, key in ((args.actors, "cluster.actors"), (args.envs_per_actor, "cluster.envs_per_actor"),
                      (args.budget_steps, "train.budget_env_steps"), (args.seed, "train.seed"),
                      (args.address, "cluster.address"), (args.redis, "replay.url"),
                      (args.metrics_port, "cluster.metrics_port")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if args.resume:
        given = [flag for flag, value in (("--preset", args.preset), ("--run-dir", args.run_dir), ("--seed", args.seed))
                 if value is not None]
        driver = Driver(resume_config(args.resume, overrides, given), args.resume, resume=True)
    else:
        preset = args.preset or DEFAULT_PRESET
        cfg = config_lib.load_config(preset, overrides)
        run_dir = args.run_dir or _runs_root() / f"{preset.replace('+', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        driver = Driver(cfg, run_dir, preset=preset)
    try:
        driver.run()
    except KeyboardInterrupt:
        print("orrery train: interrupted; the learner's last checkpoint is kept; continue with "
              f"--resume {driver.run_dir}", file=sys.stderr)
        return 130
    return 0


def _device(role: str, choice: str, precision: str = "auto"):
    """``--device`` -> common/device.py's decision for this process; a device that cannot be used is a usage error."""
    import torch

    from common.device import DeviceError, setup_process

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(choice)
    except RuntimeError:
        raise config_lib.ConfigError(f"--device {choice!r} is no torch device; choose auto, cpu, cuda or cuda:N") \
            from None
    try:
        return setup_process(role, device=choice, precision=precision, threads=os.cpu_count() or 1)
    except DeviceError as error:
        raise config_lib.ConfigError(str(error)) from None


def cmd_eval(args) -> int:
    from actors.evaluator import describe, evaluate, write_results

    cfg, state = _run_checkpoint(args.run_dir)
    placed = _device("orrery eval", args.device, cfg.train.precision)
    episodes = args.episodes or cfg.train.eval_episodes
    print(placed.describe(), flush=True)
    result = evaluate(cfg, state["model"], state["updates"], episodes=episodes, seed=20_000, run=args.run_dir.name,
                      device=placed.device, precision=placed.precision)
    files = write_results(args.run_dir, result, env_steps=0, bit_depth=cfg.env.bit_depth)
    print(f"eval of {args.run_dir} (weights after {state['updates']} updates, {episodes} episodes): "
          f"{describe(result)}")
    print(f"results: {files['returns']}, {files['gif']}")
    return 0


def cmd_evaluate_model(args) -> int:
    import json

    from actors.rollout import random_policy, run_episode
    from common.envs import make_env_from_config
    from common.episode import decode
    from learner.model_eval import describe, evaluate_model
    from learner.world_model import WorldModel

    cfg, state = _run_checkpoint(args.run_dir)
    placed = _device("orrery evaluate-model", args.device)
    env = make_env_from_config(cfg.env, 30_000)  # a seed no actor or evaluation of the run uses
    try:
        if args.episodes_from:
            episodes = [decode(path.read_bytes()) for path in sorted(args.episodes_from.glob("*.ep"))]
            if not episodes:
                raise config_lib.ConfigError(f"--episodes-from {args.episodes_from}: no *.ep files there")
        else:
            episodes = [run_episode(env, random_policy(env.spec.action, 30_000 + i), run=args.run_dir.name, index=i)
                        for i in range(args.episodes)]
    finally:
        env.close()
    model = WorldModel.from_config(cfg, env.spec.action.size)
    model.load_state_dict(state["model"])
    model.to(placed.device)
    result = evaluate_model(model, episodes, context=args.context, horizon=args.horizon or cfg.planner.horizon,
                            windows=args.windows, samples=args.samples, bit_depth=cfg.env.bit_depth)
    result.update({"family": cfg.model.family, "updates": state["updates"], "device": str(placed.device),
                   "episodes": len(episodes)})
    out = args.run_dir / "eval" / "model.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"world model of {args.run_dir}: {cfg.model.family}, jump {cfg.model.jump}, weights after "
          f"{state['updates']} updates, {len(episodes)} held-out episodes, {placed.device}")
    print(describe(result))
    print(f"results: {out}")
    return 0


def cmd_report(args) -> int:
    from cluster.sweep import report_inputs

    run_dirs, sweep_dir = report_inputs(args.run_dirs)  # a sweep directory stands for all of its runs
    page, notes = write_report(run_dirs, args.out or sweep_dir)
    for note in notes:
        print(f"note: {note}")
    print(f"report: {page}")
    print(f"results against PlaNet (Markdown): {page.parent / 'results.md'}")
    print(f"where the time went (Markdown): {page.parent / 'time.md'}")
    return 0


def cmd_status(args) -> int:
    import json

    from cluster.status import format_table, prune, statuses

    rows = statuses()
    if args.prune:
        for run in prune(rows):
            print(f"forgot {run} (its driver does not answer)")
        rows = [row for row in rows if row["state"] == "running"]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0


def cmd_sweep(args) -> int:
    from cluster.sweep import SweepSpec, SweepState, parse_seeds, parse_tasks

    if args.max_concurrent < 0 or args.max_retries < 0:
        raise SweepError("--max-concurrent and --max-retries must be >= 0")
    if args.resume:
        state = SweepState.load(args.resume)
    else:
        if args.seeds is None:
            raise SweepError("--seeds is required (e.g. --seeds 0:10), unless you --resume SWEEP_DIR")
        overrides = list(args.overrides)
        for flag, key in ((args.actors_per_run, "cluster.actors"), (args.envs_per_actor, "cluster.envs_per_actor"),
                          (args.budget_steps, "train.budget_env_steps")):
            if flag is not None:
                overrides.append(f"{key}={flag}")
        spec = SweepSpec(args.preset, parse_seeds(args.seeds), parse_tasks(args.tasks or []), tuple(overrides),
                         cluster_replay=bool(args.redis))
        name = f"sweep-{args.preset.replace('+', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        sweep_dir = args.sweep_dir or _runs_root() / name
        state = SweepState.new(sweep_dir, spec)
    from cluster.sweeper import run_sweep

    return run_sweep(state, max_concurrent=args.max_concurrent, max_retries=args.max_retries,
                     replay_url=args.redis or "", address=args.address)


# ---------------------------------------------------------------- helpers

def _run_checkpoint(run_dir: Path) -> tuple[config_lib.Config, dict]:
    """A run's saved config and its latest usable checkpoint (checked against the run's model); usage errors else."""
    from cluster.preflight import check_run_dir, saved_config
    from common.envs import make_env_from_config
    from learner import checkpoint
    from learner.world_model import WorldModel

    check_run_dir(run_dir, resume=True)
    cfg = saved_config(run_dir)
    if not any((run_dir / "checkpoints" / name).exists() for name in (checkpoint.LATEST, checkpoint.PREVIOUS)):
        raise config_lib.ConfigError(f"{run_dir}: no checkpoint in checkpoints/ yet")
    probe = make_env_from_config(cfg.env, 0)
    spec = probe.spec
    probe.close()
    model = WorldModel.from_config(cfg, spec.action.size)
    state = checkpoint.load(run_dir / "checkpoints", check=lambda state: model.load_state_dict(state["model"]),
                            warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    if state is None:
        raise config_lib.ConfigError(f"{run_dir}: no checkpoint in checkpoints/ yet")
    return cfg, state


def _runs_root() -> Path:
    """Where default run and sweep directories go: $ORRERY_RUNS (a cluster's shared disk), else ./runs."""
    return Path(os.environ.get("ORRERY_RUNS") or "runs")


def _replay_errors() -> tuple:
    """Errors a user can fix that live beside torch and Redis (unreachable Redis, wrong password, an unusable
    checkpoint), imported only when a command fails."""
    from learner.checkpoint import CheckpointError
    from replay import ReplayError

    return (ReplayError, CheckpointError)


def _run_errors() -> tuple:
    """What stops a started run (a learner that cannot start), imported only when needed."""
    from cluster.driver import RunError

    return (RunError,)


def _load(args) -> config_lib.Config:
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    return config_lib.load_config(args.preset or DEFAULT_PRESET, overrides)


class _Progress:
    """A progress bar on a terminal; a status line every few seconds otherwise (CI logs, pipes)."""

    def __init__(self, label: str, total: int, every_s: float = 5.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.tty = sys.stdout.isatty()
        self.start = self.last = time.perf_counter()

    def update(self, step: int) -> None:
        now = time.perf_counter()
        if self.tty and (now - self.last > 0.1 or step == self.total):
            filled = int(30 * step / self.total)
            print(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} "
                  f"{step / (now - self.start):.1f} steps/s", end="", flush=True)
            self.last = now
        elif not self.tty and now - self.last > self.every_s:
            print(f"{self.label}: {step}/{self.total} steps, {step / (now - self.start):.1f} steps/s", flush=True)
            self.last = now

    def done(self) -> None:
        if self.tty:
            print("\r" + " " * 80 + "\r", end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
