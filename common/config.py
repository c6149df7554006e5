"""Run configuration: one frozen dataclass per component, named presets, overrides.

A config is built as ``defaults (PlaNet) + preset overlays + --set overrides``::

    cfg = load_config("dmc-cheetah-run+debug", ["train.batch_size=8"])

Presets are overlays (nested dicts) applied left to right, as dreamerv3 stacks
``dmc_vision`` + ``size12m`` + ``debug``. Every override is type-checked against
the dataclass field it names, and an unknown key is rejected with the valid keys
listed. Values computed from others live in :func:`derive`, nowhere else. The
merged config is saved with each run (``RUN_DIR/config.yaml``) and round-trips
through YAML exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from common.envs.tasks import ACTION_REPEAT as _PLANET_ACTION_REPEAT
from common.urls import redact


AUTO = "auto"
"""The value of cluster.learner_gpus / cluster.actor_gpus that lets the cluster's GPUs decide."""


class ConfigError(ValueError):
    """A preset, override or config file that cannot be applied; the message says how to fix it."""


@dataclass(frozen=True)
class EnvConfig:
    task: str = "dmc:cheetah-run"
    """Task id: ``dmc:<domain>-<task>``, ``atari:<Game>`` or ``gym:<id>`` (common/envs)."""
    action_repeat: int = 4
    """R: env steps per agent step, rewards summed (PlaNet Table 1 per task)."""
    max_env_steps: int = 1000
    """Env steps per episode before time-limit truncation (PlaNet: 1000)."""
    image_size: int = 64
    """Observation frames are image_size x image_size x 3 uint8."""
    bit_depth: int = 5
    """Bits per colour channel kept by preprocessing, with uniform dequantisation noise (PlaNet: 5)."""


@dataclass(frozen=True)
class ModelConfig:
    family: str = "rssm"
    """World-model family: rssm (PlaNet), deterministic, stochastic; dssm, sssm, ar (Buesing et al.)."""
    deter_size: int = 200
    """D: size of the deterministic GRU state h_t."""
    stoch_size: int = 30
    """Z: size of the stochastic Gaussian state s_t."""
    hidden_size: int = 200
    """Width of the MLPs (transition f, prior, posterior, reward head)."""
    cnn_depth: int = 32
    """Channels of the first encoder conv layer; the embedding E is 32 * cnn_depth (1024 for PlaNet)."""
    min_std: float = 0.1
    """Lower bound added to the softplus std of prior and posterior."""
    jump: int = 1
    """j: env steps covered by one transition of a jumpy model (Buesing et al.); 1 is an ordinary model."""
    state_channels: int = 32
    """C_s: channels of the spatial (8x8) state map s_t of dssm and sssm, and of the ar transition's map."""
    latent_channels: int = 8
    """C_z: channels of the spatial (8x8) latent map z_t of dssm and sssm (the ar map has C_s + C_z channels)."""


@dataclass(frozen=True)
class LossConfig:
    free_nats: float = 3.0
    """KL below this many nats is not penalised: max(free_nats, KL)."""
    image_scale: float = 1.0
    """Weight of the image log-likelihood ln p(o_t | h_t, s_t)."""
    image_fraction: float = 1.0
    """Share of a batch's T x B frames decoded for the image term, drawn afresh each update; the term is their mean,
    an unbiased estimate of the mean over all frames. 1 decodes every frame (PlaNet); less saves decoder time."""
    reward_scale: float = 10.0
    """Weight of the reward log-likelihood ln p(r_t | h_t, s_t) (PlaNet reference code: 10)."""
    kl_scale: float = 1.0
    """Weight of the one-step KL(q(s_t | h_t, e_t) || p(s_t | h_t))."""
    overshooting_distance: int = 0
    """D_o: latent overshooting over distances 1..D_o; 0 turns it off (off in the final PlaNet agent, 50 in the paper's study)."""
    overshooting_kl_scale: float = 1.0
    """beta: weight of the d-step KL terms, d >= 2."""
    global_kl_scale: float = 0.0
    """Weight of KL(q(s_t) || N(0, I)); 0 turns it off."""


@dataclass(frozen=True)
class PlannerConfig:
    horizon: int = 12
    """H: planning horizon in agent steps."""
    candidates: int = 1000
    """J: action sequences sampled per CEM iteration."""
    top_k: int = 100
    """K: best candidates the belief is refit to."""
    iterations: int = 10
    """I: CEM iterations per environment step."""
    exploration_noise: float = 0.3
    """Std of Gaussian noise added to the planned action while collecting (0 in evaluation)."""


@dataclass(frozen=True)
class ReplayConfig:
    url: str = ""
    """Redis URL of the replay (redis://:password@host:port/db); empty starts an embedded server on loopback."""
    capacity_steps: int = 1_000_000
    """Agent steps kept before the oldest whole episodes are evicted (FIFO)."""
    min_steps: int = 0
    """Agent steps in replay before the learner starts; 0 means the seed episodes' worth (derive())."""
    samples_per_insert_tolerance: float = 0.1
    """Relative drift allowed around the samples-per-insert ratio before the side ahead waits."""
    prefetch_batches: int = 4
    """Batches the sampler keeps ready in the background for the learner."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    """Run seed; each actor's seed is derived from it and recorded."""
    batch_size: int = 50
    """B: chunks per update."""
    chunk_length: int = 50
    """L: agent steps per chunk."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-4
    """Adam epsilon."""
    grad_clip: float = 1000.0
    """Global gradient-norm clip."""
    seed_episodes: int = 5
    """S: episodes collected with random actions before planning starts."""
    updates_per_episode: int = 100
    """C: gradient updates per collected episode; fixes the samples-per-insert ratio."""
    budget_env_steps: int = 1_000_000
    """Env steps (action repeat counted) after which the run stops."""
    publish_every: int = 100
    """Learner updates between weight broadcasts to actors."""
    checkpoint_every: int = 1000
    """Learner updates between checkpoints."""
    eval_episodes: int = 5
    """Episodes planned without exploration noise at the end of a run (and as many random ones for comparison)."""
    eval_every_env_steps: int = 0
    """Env steps between evaluations during training (a learning curve); 0 evaluates only at the end."""
    precision: str = "auto"
    """Learner forward precision: float32, bfloat16 (autocast), or auto (bfloat16 where the device runs it natively)."""
    compile: bool = False
    """Wrap the learner's loss in torch.compile."""


@dataclass(frozen=True)
class ClusterConfig:
    actors: int = 1
    """Actor processes, each with its own environments and model copy."""
    envs_per_actor: int = 1
    """Environments one actor steps and plans for in one batch."""
    actor_gpus: float | str = "auto"
    """GPU share per actor (0 plans on the CPU), or auto: an equal share of what the learner leaves of its GPU,
    one share kept for evaluation (cluster/resources.py: gpu_shares). A cluster without GPUs runs on CPUs."""
    learner_gpus: float | str = "auto"
    """GPUs for the learner, or auto: half a GPU (a whole one when actors plan on the CPU). CPU without GPUs."""
    address: str = ""
    """Ray address: empty starts local Ray, 'auto' joins the running cluster."""
    metrics_port: int = 0
    """Port of the run's Prometheus endpoint (http://HOST:PORT/metrics); 0 picks a free one, -1 turns it off."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint listens on: loopback, where the driver and Prometheus share a node."""
    dashboard: bool = True
    """Start Ray's dashboard (and its metrics agent) with a local Ray."""


@dataclass(frozen=True)
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))


# ---------------------------------------------------------------- presets

def _dmc(task: str) -> dict:
    return {"env": {"task": f"dmc:{task}", "action_repeat": _PLANET_ACTION_REPEAT[task]}}


def _atari(game: str) -> dict:
    return {"env": {"task": f"atari:{game}", "action_repeat": 4, "max_env_steps": 8000}}


PRESETS: dict[str, dict] = {
    "dmc-cartpole-swingup": _dmc("cartpole-swingup"),
    "dmc-reacher-easy": _dmc("reacher-easy"),
    "dmc-cheetah-run": _dmc("cheetah-run"),
    "dmc-finger-spin": _dmc("finger-spin"),
    "dmc-cup-catch": _dmc("cup-catch"),
    "dmc-walker-walk": _dmc("walker-walk"),
    # ALE frame skip 4; 8000 frames (2000 agent steps, about 25 MB of 64x64 frames) per
    # episode keeps one episode a comfortable Redis value; the game's own end comes first
    # in most MsPacman episodes under a random or planning policy.
    "atari-mspacman": _atari("MsPacman"),
    # More ALE games for the model-family comparison (Buesing et al. 2018 compare models on several games).
    "atari-bowling": _atari("Bowling"),
    "atari-centipede": _atari("Centipede"),
    "atari-chopper-command": _atari("ChopperCommand"),
    "atari-surround": _atari("Surround"),
    # PlaNet's structure at sizes a 2-core CPU trains in tens of minutes: smaller nets, fewer CEM
    # candidates, shorter chunks, half the updates per episode; evaluation every 10 episodes.
    # dmc-cheetah-run+cpu on 2 cores: eval return 132 +- 22 at 30k env steps (11 min) against a random
    # policy's 15 +- 5, 151 at 90k (32 min). Loss settings stay PlaNet's: on cartpole-swingup, 1 free nat
    # with 6-step overshooting made the posterior carry less and predict rewards worse than 3 free nats.
    "cpu": {
        "model": {"deter_size": 100, "stoch_size": 20, "hidden_size": 100, "cnn_depth": 16},
        "planner": {"candidates": 300, "top_k": 30, "iterations": 6},
        "train": {"batch_size": 16, "chunk_length": 32, "updates_per_episode": 50, "eval_every_env_steps": 10_000,
                  "eval_episodes": 3, "publish_every": 10, "checkpoint_every": 100},
        "cluster": {"learner_gpus": 0.0, "actor_gpus": 0.0},
    },
    # synthetic:reach (common/envs/synthetic.py) at sizes that learn it in about 5 minutes on 2 CPU cores: what
    # `make run` trains. Smaller than PlaNet everywhere (the task is small); a higher learning rate and 1 free nat,
    # as the moving-square learning tests use. 50 updates per 100-agent-step episode is one update per 2 agent
    # steps, PlaNet's own ratio at action repeat 2 (100 updates per 1000-env-step episode).
    "synthetic-reach": {
        "env": {"task": "synthetic:reach", "action_repeat": 1, "max_env_steps": 100},
        "model": {"deter_size": 64, "stoch_size": 8, "hidden_size": 64, "cnn_depth": 8},
        "loss": {"free_nats": 1.0},
        "planner": {"horizon": 8, "candidates": 200, "top_k": 20, "iterations": 4},
        "replay": {"capacity_steps": 100_000},
        "train": {"batch_size": 16, "chunk_length": 16, "learning_rate": 3e-3, "seed_episodes": 5,
                  "updates_per_episode": 50, "budget_env_steps": 2500, "publish_every": 10, "checkpoint_every": 200,
                  "eval_episodes": 10},
        "cluster": {"learner_gpus": 0.0, "actor_gpus": 0.0},
    },
    # Shrinks model, planner, batch and episodes so that a whole run fits a CPU test.
    "debug": {
        "env": {"max_env_steps": 200},
        "model": {"deter_size": 32, "stoch_size": 8, "hidden_size": 32, "cnn_depth": 4, "state_channels": 8,
                  "latent_channels": 4},
        "planner": {"horizon": 4, "candidates": 32, "top_k": 4, "iterations": 2},
        "replay": {"capacity_steps": 20_000, "prefetch_batches": 1},
        "train": {"batch_size": 4, "chunk_length": 8, "seed_episodes": 1, "updates_per_episode": 5,
                  "budget_env_steps": 2000, "publish_every": 5, "checkpoint_every": 20, "eval_episodes": 2},
        "cluster": {"learner_gpus": 0.0, "actor_gpus": 0.0},
    },
}
"""Named overlays; stack them with '+' (``dmc-cheetah-run+debug``). Keys are ``section -> field -> value``."""


def preset_names() -> list[str]:
    return list(PRESETS)


# ---------------------------------------------------------------- building configs

def load_config(preset: str = "", overrides: Sequence[str] = ()) -> Config:
    """Defaults, then each '+'-separated preset in order, then ``a.b=value`` overrides."""
    cfg = Config()
    for name in [p for p in preset.split("+") if p.strip()] if preset else []:
        name = name.strip()
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; "
                              f"known presets: {', '.join(PRESETS)} (stack them with '+', e.g. dmc-cheetah-run+debug)")
        cfg = apply_overlay(cfg, PRESETS[name], origin=f"preset {name!r}")
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``section.field=value`` strings; values are parsed as YAML scalars, then type-checked."""
    overlay: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} is not of the form section.field=value (e.g. train.batch_size=16)")
        section, _, name = key.strip().partition(".")
        overlay.setdefault(section, {})[name] = _parse_scalar(text.strip())
    return apply_overlay(cfg, overlay, origin="--set")


def _parse_scalar(text: str) -> Any:
    """Command-line value: int, then float (so '3e-4' is a number, unlike YAML 1.1), then a YAML scalar."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, str)) or value is None else text


def apply_overlay(cfg: Config, overlay: Mapping[str, Any], *, origin: str = "overlay") -> Config:
    """Return ``cfg`` with the nested ``section -> field -> value`` mapping applied, every key and type checked."""
    if not isinstance(overlay, Mapping):
        raise ConfigError(f"{origin}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(overlay).__name__}")
    sections = {}
    for section, values in overlay.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r}{_suggest(section, SECTIONS)}; "
                              f"valid sections: {', '.join(SECTIONS)}")
        current = getattr(cfg, section)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must map field names to values, got {values!r}")
        hints = typing.get_type_hints(type(current))
        changes = {}
        for name, value in values.items():
            if name not in hints:
                valid = [f.name for f in dataclasses.fields(current)]
                raise ConfigError(f"{origin}: unknown key {section}.{name}{_suggest(name, valid)}; "
                                  f"valid keys in {section}: {', '.join(valid)}")
            changes[name] = _coerce(f"{section}.{name}", value, hints[name], origin)
        sections[section] = dataclasses.replace(current, **changes)
    new = dataclasses.replace(cfg, **sections)
    check(new)
    return new


def _coerce(key: str, value: Any, kind: Any, origin: str) -> Any:
    """Check ``value`` against a field type; ints are accepted for floats, nothing else is converted."""
    def bad(expected: str) -> ConfigError:
        shown = redact(value) if isinstance(value, str) else value  # a URL's password never reaches a message
        return ConfigError(f"{origin}: {key} must be {expected}, got {shown!r} ({type(value).__name__})")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string (quote it if it looks like a number)")
        return value
    if set(typing.get_args(kind)) == {float, str}:  # a share: a number, or "auto"
        if value == AUTO:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"a number or {AUTO!r}")
        return float(value)
    raise TypeError(f"config field {key} has an unsupported type {kind!r}")  # a bug in this module, not user input


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------- checks and derived values

_FAMILIES = ("rssm", "deterministic", "stochastic", "dssm", "sssm", "ar")
_FRAME_PREDICTION_FAMILIES = ("ar", "dssm")
"""Families trained on predicted frames rather than the ELBO: no KL to overshoot, every predicted frame decoded."""


def check(cfg: Config) -> None:
    """Reject values no run could use, naming the key and the valid range."""
    positive = {
        "env.action_repeat": cfg.env.action_repeat, "env.max_env_steps": cfg.env.max_env_steps,
        "env.image_size": cfg.env.image_size, "model.deter_size": cfg.model.deter_size,
        "model.stoch_size": cfg.model.stoch_size, "model.hidden_size": cfg.model.hidden_size,
        "model.cnn_depth": cfg.model.cnn_depth, "model.jump": cfg.model.jump,
        "model.state_channels": cfg.model.state_channels, "model.latent_channels": cfg.model.latent_channels,
        "planner.horizon": cfg.planner.horizon, "planner.candidates": cfg.planner.candidates,
        "planner.top_k": cfg.planner.top_k, "planner.iterations": cfg.planner.iterations,
        "train.batch_size": cfg.train.batch_size, "train.chunk_length": cfg.train.chunk_length,
        "train.learning_rate": cfg.train.learning_rate, "train.adam_eps": cfg.train.adam_eps,
        "train.grad_clip": cfg.train.grad_clip, "train.updates_per_episode": cfg.train.updates_per_episode,
        "train.budget_env_steps": cfg.train.budget_env_steps, "train.publish_every": cfg.train.publish_every,
        "train.eval_episodes": cfg.train.eval_episodes,
        "train.checkpoint_every": cfg.train.checkpoint_every, "replay.capacity_steps": cfg.replay.capacity_steps,
        "replay.prefetch_batches": cfg.replay.prefetch_batches, "cluster.actors": cfg.cluster.actors,
        "cluster.envs_per_actor": cfg.cluster.envs_per_actor,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    non_negative = {
        "loss.free_nats": cfg.loss.free_nats, "loss.image_scale": cfg.loss.image_scale,
        "loss.reward_scale": cfg.loss.reward_scale, "loss.kl_scale": cfg.loss.kl_scale,
        "loss.overshooting_distance": cfg.loss.overshooting_distance,
        "loss.overshooting_kl_scale": cfg.loss.overshooting_kl_scale,
        "loss.global_kl_scale": cfg.loss.global_kl_scale, "model.min_std": cfg.model.min_std,
        "planner.exploration_noise": cfg.planner.exploration_noise, "train.seed": cfg.train.seed,
        "train.seed_episodes": cfg.train.seed_episodes, "replay.min_steps": cfg.replay.min_steps,
        "train.eval_every_env_steps": cfg.train.eval_every_env_steps,
        "replay.samples_per_insert_tolerance": cfg.replay.samples_per_insert_tolerance,
        **{key: share for key, share in (("cluster.actor_gpus", cfg.cluster.actor_gpus),
                                         ("cluster.learner_gpus", cfg.cluster.learner_gpus)) if share != AUTO},
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if not 0 < cfg.loss.image_fraction <= 1:
        raise ConfigError(f"loss.image_fraction must be in (0, 1] (the share of frames decoded), got "
                          f"{cfg.loss.image_fraction}")
    if cfg.model.family in _FRAME_PREDICTION_FAMILIES and cfg.loss.image_fraction < 1:
        raise ConfigError(f"loss.image_fraction applies to families trained on the ELBO; model.family="
                          f"{cfg.model.family} decodes every predicted frame (set it to 1)")
    if cfg.train.precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"train.precision {cfg.train.precision!r}: choose auto, float32 or bfloat16")
    if cfg.model.family not in _FAMILIES:
        raise ConfigError(f"model.family {cfg.model.family!r} is unknown{_suggest(cfg.model.family, _FAMILIES)}; "
                          f"choose one of {', '.join(_FAMILIES)}")
    if cfg.planner.top_k > cfg.planner.candidates:
        raise ConfigError(f"planner.top_k ({cfg.planner.top_k}) must not exceed planner.candidates "
                          f"({cfg.planner.candidates})")
    if not 1 <= cfg.env.bit_depth <= 8:
        raise ConfigError(f"env.bit_depth must be in 1..8, got {cfg.env.bit_depth}")
    if cfg.env.image_size != 64:
        raise ConfigError(f"env.image_size must be 64 (the conv encoder and decoder are built for 64x64 frames), "
                          f"got {cfg.env.image_size}")
    if cfg.loss.overshooting_distance > cfg.train.chunk_length:
        raise ConfigError(f"loss.overshooting_distance ({cfg.loss.overshooting_distance}) cannot exceed "
                          f"train.chunk_length ({cfg.train.chunk_length}); shorten it or lengthen the chunks")
    _check_jump(cfg)
    _check_replay_fits(cfg)
    if not -1 <= cfg.cluster.metrics_port <= 65535:
        raise ConfigError(f"cluster.metrics_port must be a TCP port (1..65535), 0 for a free one or -1 for none, "
                          f"got {cfg.cluster.metrics_port}")


def _check_jump(cfg: Config) -> None:
    """A jumpy model (model.jump = j) trains on chunks packed j agent steps to a step and plans j steps a call."""
    jump = cfg.model.jump
    if cfg.train.chunk_length % jump:
        raise ConfigError(f"train.chunk_length ({cfg.train.chunk_length}) must be divisible by model.jump ({jump}): "
                          f"a jumpy model trains on chunks packed into chunk_length / jump steps of {jump} agent steps")
    if cfg.planner.horizon % jump:
        raise ConfigError(f"planner.horizon ({cfg.planner.horizon}) must be divisible by model.jump ({jump}): "
                          f"a jumpy model plans in whole jumps of {jump} agent steps")
    if cfg.loss.overshooting_distance > cfg.train.chunk_length // jump:
        raise ConfigError(f"loss.overshooting_distance ({cfg.loss.overshooting_distance}) cannot exceed the packed "
                          f"chunk length train.chunk_length / model.jump ({cfg.train.chunk_length // jump})")
    if cfg.model.family in _FRAME_PREDICTION_FAMILIES and cfg.loss.overshooting_distance:
        raise ConfigError(f"loss.overshooting_distance applies to families trained with a KL; model.family="
                          f"{cfg.model.family} is trained on predicted frames instead (set it to 0)")


def _check_replay_fits(cfg: Config) -> None:
    """Chunks an episode can hold, and a replay that holds an episode and the learner's minimum: else a run
    would start, then fail or wait forever once the first episode arrives."""
    derived = derive(cfg)
    frames = derived.episode_agent_steps + 1  # an episode of T agent steps holds T+1 frames
    if cfg.train.chunk_length > frames:
        raise ConfigError(f"train.chunk_length ({cfg.train.chunk_length}) is longer than an episode ({frames} frames: "
                          f"env.max_env_steps {cfg.env.max_env_steps} / env.action_repeat {cfg.env.action_repeat}, "
                          f"plus the first); no chunk could ever be sampled: shorten the chunks or lengthen the episodes")
    if cfg.replay.capacity_steps < derived.episode_agent_steps:
        raise ConfigError(f"replay.capacity_steps ({cfg.replay.capacity_steps}) is below one episode "
                          f"({derived.episode_agent_steps} agent steps); raise it to at least that")
    if cfg.replay.capacity_steps < derived.min_replay_steps:
        raise ConfigError(f"replay.capacity_steps ({cfg.replay.capacity_steps}) is below the agent steps the learner "
                          f"waits for before training ({derived.min_replay_steps}: replay.min_steps, or "
                          f"train.seed_episodes episodes); the learner would never start: raise the capacity")


@dataclass(frozen=True)
class Derived:
    """Values computed from a Config; :func:`derive` is the one place that computes them."""

    embed_size: int
    """E: encoder output size, 32 * cnn_depth (1024 for PlaNet's depth 32)."""
    episode_agent_steps: int
    """Agent steps in a full-length episode: ceil(max_env_steps / action_repeat)."""
    updates_per_agent_step: float
    """Learner updates per inserted agent step: C / episode_agent_steps."""
    samples_per_insert: float
    """Sampled steps per inserted step: updates_per_agent_step * B * L (the replay limiter's ratio)."""
    min_replay_steps: int
    """Agent steps in replay before training starts."""


def derive(cfg: Config) -> Derived:
    episode = -(-cfg.env.max_env_steps // cfg.env.action_repeat)
    updates_per_step = cfg.train.updates_per_episode / episode
    return Derived(
        embed_size=32 * cfg.model.cnn_depth,
        episode_agent_steps=episode,
        updates_per_agent_step=updates_per_step,
        samples_per_insert=updates_per_step * cfg.train.batch_size * cfg.train.chunk_length,
        min_replay_steps=cfg.replay.min_steps or max(1, cfg.train.seed_episodes) * episode,
    )


# ---------------------------------------------------------------- resuming and saving

RESUMABLE = ("cluster.", "planner.", "replay.url", "replay.prefetch_batches", "replay.samples_per_insert_tolerance",
             "train.budget_env_steps", "train.eval_every_env_steps", "train.eval_episodes", "train.checkpoint_every",
             "train.publish_every", "train.precision", "train.compile")
"""Keys (or section prefixes) a resumed run may change: how it is run, planned and paced; never what its
checkpoint and replay were made with (task, model, losses, batch shape, seed)."""


def changed_keys(old: Config, new: Config) -> list[str]:
    """``section.field`` of every value that differs between two configs."""
    before, after = to_dict(old), to_dict(new)
    return [f"{section}.{name}" for section in SECTIONS for name in before[section]
            if before[section][name] != after[section][name]]


def unresumable(old: Config, new: Config) -> list[str]:
    """The changed keys a resumed run cannot honour (see RESUMABLE)."""
    return [key for key in changed_keys(old, new) if not key.startswith(RESUMABLE)]


def redacted(cfg: Config) -> Config:
    """``cfg`` as it may be written to disk or sent around: the replay URL's password masked."""
    if not cfg.replay.url or redact(cfg.replay.url) == cfg.replay.url:
        return cfg
    return dataclasses.replace(cfg, replay=dataclasses.replace(cfg.replay, url=redact(cfg.replay.url)))


# ---------------------------------------------------------------- YAML

def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return {section: dataclasses.asdict(getattr(cfg, section)) for section in SECTIONS}


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_yaml(text: str) -> Config:
    """Parse a saved config; every section and key is checked as an override would be."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file is not valid YAML: {error}") from None
    return apply_overlay(Config(), data or {}, origin="config file")


def summary(cfg: Config) -> str:
    """One line of the settings that tell presets apart."""
    return (f"task={cfg.env.task} repeat={cfg.env.action_repeat} episode={cfg.env.max_env_steps} "
            f"model={cfg.model.family}(D={cfg.model.deter_size},Z={cfg.model.stoch_size}) "
            f"cem(H={cfg.planner.horizon},J={cfg.planner.candidates},K={cfg.planner.top_k},I={cfg.planner.iterations}) "
            f"batch={cfg.train.batch_size}x{cfg.train.chunk_length}")
