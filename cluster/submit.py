"""Run an ``orrery`` command on a Ray cluster's head node, wired to the cluster.

    ray submit deploy/cluster.yaml cluster/submit.py -- train --preset dmc-cheetah-run --actors 16
    ray submit deploy/cluster.yaml cluster/submit.py -- sweep --preset dmc-cheetah-run --seeds 0:10
    ray job submit --address http://127.0.0.1:8265 -- python cluster/submit.py sweep --preset ... --seeds 0:10

``ray submit`` copies this one file to the head and runs it there, so it imports Orrery from the
installed package (deploy/cluster.yaml installs it on every node). For ``train`` and ``sweep`` it
adds what a cluster run needs unless the command line gives it:

- ``--address auto``: join this cluster (Ray's own address under ``ray job submit``);
- ``--redis $ORRERY_REPLAY_URL``: the head's replay Redis (each run keeps its own namespace in it);
- run and sweep directories under ``$ORRERY_RUNS``, the cluster's shared disk, where the learners'
  checkpoints on other nodes are visible to the run's driver.

Both variables come from the environment, else from ``~/.orrery/head.env`` (``$ORRERY_HEAD_ENV``),
which deploy/head/start-replay.sh writes on the head node (mode 0600: the URL holds the password).
Every other command (``status``, ``report``, ``eval``) passes through unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HEAD_ENV = "~/.orrery/head.env"
"""KEY=VALUE lines written by deploy/head/start-replay.sh: ORRERY_REPLAY_URL, ORRERY_RUNS (ORRERY_HEAD_ENV moves it)."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines and an optional ``export`` ignored); {} when missing."""
    path = path.expanduser()
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def cluster_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with --address, --redis added to train and sweep where missing (see the module docstring)."""
    if not argv or argv[0] not in ("train", "sweep"):
        return list(argv)
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    extra = []
    if "--address" not in given:
        extra += ["--address", "auto"]
    if "--redis" not in given and env.get("ORRERY_REPLAY_URL"):
        extra += ["--redis", env["ORRERY_REPLAY_URL"]]
    return [argv[0], *extra, *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    head_env = Path(os.environ.get("ORRERY_HEAD_ENV") or HEAD_ENV)
    env = {**read_env_file(head_env), **{k: v for k, v in os.environ.items() if k.startswith("ORRERY_")}}
    if env.get("ORRERY_RUNS"):
        os.environ["ORRERY_RUNS"] = env["ORRERY_RUNS"]  # the default root of run and sweep directories (cli.py)
    argv = cluster_argv(argv, env)
    if argv[:1] in (["train"], ["sweep"]) and not any(arg.split("=")[0] == "--redis" for arg in argv):
        print(f"cluster/submit.py: no ORRERY_REPLAY_URL (environment or {head_env}); runs use an embedded Redis "
              f"each, so every run stays on one node", file=sys.stderr)
    from cluster.cli import main as orrery

    return orrery(argv)


if __name__ == "__main__":
    # Run as `python cluster/submit.py` from a checkout, Python puts cluster/ first on sys.path, where its
    # files would shadow top-level modules of the same names: put the checkout's root there instead.
    # (Copied alone to ~/submit.py by `ray submit`, it imports the installed package.)
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0]).resolve() == here and (here / "__init__.py").exists():
        sys.path[0] = str(here.parent)
    sys.exit(main())
