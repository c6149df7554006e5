"""Checks a run passes before it starts or writes anything: its directory, what ``--resume`` can honour, its checkpoint.

    check_run_dir(run_dir, resume=False)                 # RunDirError: a file, a directory holding a run
    cfg = resume_config(run_dir, overrides, given)       # the saved config + what --resume may change
    note = verify_checkpoint(run_dir, cfg, env_spec)     # CheckpointError, or a warning when falling back

Every error here is a :class:`~common.config.ConfigError` (the CLI prints its one line and exits with
code 2); none of these functions creates or changes a file.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Iterable

from common import config as config_lib
from common.config import Config, ConfigError
from common.urls import is_redacted, redact

CONFIG = "config.yaml"
RUN_FILES = (CONFIG, "progress.json")
"""What a run writes once its checks have passed: a directory holding either holds a run (other files, such as a
sweep's driver.log or what a run that never started left, do not count)."""


class RunDirError(ConfigError):
    """A run directory that cannot be used as asked (a file, an existing run for a new one, no run to resume)."""


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """A new run needs a directory that holds no run; a resumed one a directory with its config.yaml."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        flag = "--resume" if resume else "--run-dir"
        raise RunDirError(f"{flag} {run_dir} is a file, not a run directory; choose another path")
    if resume:
        if not run_dir.is_dir():
            raise RunDirError(f"--resume {run_dir}: no such run directory")
        if not (run_dir / CONFIG).is_file():
            raise RunDirError(f"--resume {run_dir}: no {CONFIG} there; is it a run directory?")
        return
    if any((run_dir / name).exists() for name in RUN_FILES):
        raise RunDirError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                          f"--run-dir")


def saved_config(run_dir: Path) -> Config:
    """The config a run saved (its replay URL without password); ConfigError naming the file when unreadable."""
    path = Path(run_dir) / CONFIG
    try:
        text = path.read_text()
    except OSError as error:
        raise RunDirError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        return config_lib.from_yaml(text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def resume_config(run_dir: Path, overrides: Iterable[str], given: Iterable[str] = ()) -> Config:
    """The config to resume ``run_dir`` with: the saved one with ``overrides``, refusing what cannot be honoured.

    ``given``: the command-line options the user passed besides --resume; --preset, --run-dir and
    --seed name another run, not this one, and are refused. Overrides may change only what
    :data:`common.config.RESUMABLE` allows. The replay URL: a run on an embedded Redis keeps it (no
    --redis); a run on a cluster Redis needs --redis again when the saved URL had a password
    (config.yaml keeps none), and the same server.
    """
    refused = [flag for flag in ("--preset", "--run-dir", "--seed") if flag in set(given)]
    if refused:
        raise ConfigError(f"--resume {run_dir} continues that run with its own config; drop {', '.join(refused)} "
                          f"(to start another run, leave out --resume)")
    saved = saved_config(run_dir)
    overrides = list(overrides)
    given_url = next((item.partition("=")[2] for item in reversed(overrides) if item.startswith("replay.url=")), None)
    overrides = [item for item in overrides if not item.startswith("replay.url=")]
    cfg = config_lib.apply_overrides(saved, overrides)
    blocked = config_lib.unresumable(saved, cfg)
    if blocked:
        old, new = config_lib.to_dict(saved), config_lib.to_dict(cfg)
        changes = ", ".join(f"{key} ({_value(old, key)} -> {_value(new, key)})" for key in blocked)
        raise ConfigError(f"--resume {run_dir} cannot change {changes}: its checkpoint and replay were made with "
                          f"the saved values; start a new run for other settings")
    url = resume_replay_url(run_dir, saved.replay.url, given_url)
    return config_lib.apply_overlay(cfg, {"replay": {"url": url}}, origin="--redis")


def resume_replay_url(run_dir: Path, saved: str, given: str | None) -> str:
    """The replay URL of a resumed run (see :func:`resume_config`)."""
    if not saved:
        if given:
            raise ConfigError(f"--resume {run_dir}: the run's replay is its embedded Redis (in {run_dir}/redis); "
                              f"drop --redis")
        return ""
    if given is None:
        if is_redacted(saved):
            raise ConfigError(f"--resume {run_dir}: the run's replay is the Redis at {saved} and {CONFIG} keeps "
                              f"no password; pass its URL again with --redis")
        return saved
    if _endpoint(given) != _endpoint(saved):
        raise ConfigError(f"--resume {run_dir}: --redis {redact(given)} is not the run's replay ({saved}); its "
                          f"episodes are there")
    return given


def _endpoint(url: str) -> tuple:
    """Where a URL points (scheme, host, port, path, query), whatever its user info."""
    parts = urllib.parse.urlsplit(redact(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, parts.hostname, port, parts.path, parts.query


def _value(values: dict, key: str) -> object:
    section, _, name = key.partition(".")
    return values[section][name]


def verify_checkpoint(run_dir: Path, cfg: Config, env_spec, warn=print) -> int | None:
    """Load the run's checkpoint as its learner will (on the CPU), before anything launches.

    Returns its update count (None: the run has no checkpoint yet: its learner starts from scratch).
    A damaged latest.pt with a good previous.pt is reported through ``warn`` and the learner falls back
    the same way; CheckpointError when no checkpoint there is usable.
    """
    from learner import checkpoint
    from learner.learner import Learner

    learner = Learner(cfg, env_spec.action.size, discrete=env_spec.action.discrete, device="cpu",
                      seed=cfg.train.seed, compile=False)
    state = checkpoint.load(Path(run_dir) / "checkpoints", check=learner.load_state_dict, warn=warn)
    return None if state is None else int(state["updates"])
