"""Presets, stacking, overrides, unknown keys and the YAML round trip of common/config.py."""

import dataclasses

import pytest

from common.config import (Config, ConfigError, PRESETS, SECTIONS, apply_overlay, derive, from_yaml, load_config,
                           preset_names, to_yaml)

DMC_PRESETS = {  # PlaNet's action repeats (DESIGN.md, "Defaults")
    "dmc-cartpole-swingup": ("dmc:cartpole-swingup", 8),
    "dmc-reacher-easy": ("dmc:reacher-easy", 4),
    "dmc-cheetah-run": ("dmc:cheetah-run", 4),
    "dmc-finger-spin": ("dmc:finger-spin", 2),
    "dmc-cup-catch": ("dmc:cup-catch", 4),
    "dmc-walker-walk": ("dmc:walker-walk", 2),
}


def test_defaults_are_planet():
    cfg = Config()
    assert (cfg.model.deter_size, cfg.model.stoch_size, cfg.model.hidden_size, cfg.model.min_std) == (200, 30, 200, 0.1)
    assert derive(cfg).embed_size == 1024
    assert (cfg.train.learning_rate, cfg.train.adam_eps, cfg.train.grad_clip) == (1e-3, 1e-4, 1000.0)
    assert (cfg.train.batch_size, cfg.train.chunk_length) == (50, 50)
    assert (cfg.loss.free_nats, cfg.loss.reward_scale, cfg.loss.overshooting_distance) == (3.0, 10.0, 0)
    assert (cfg.planner.horizon, cfg.planner.candidates, cfg.planner.top_k, cfg.planner.iterations) == (12, 1000, 100, 10)
    assert (cfg.train.seed_episodes, cfg.train.updates_per_episode, cfg.planner.exploration_noise) == (5, 100, 0.3)
    assert (cfg.env.image_size, cfg.env.bit_depth, cfg.env.max_env_steps) == (64, 5, 1000)


@pytest.mark.parametrize("name", sorted(DMC_PRESETS))
def test_dmc_presets_set_task_and_action_repeat(name):
    cfg = load_config(name)
    assert (cfg.env.task, cfg.env.action_repeat) == DMC_PRESETS[name]
    assert cfg.model == Config().model and cfg.planner == Config().planner


def test_every_required_preset_exists():
    assert set(DMC_PRESETS) | {"atari-mspacman", "debug"} <= set(preset_names())
    assert load_config("atari-mspacman").env.task == "atari:MsPacman"


def test_stacking_applies_left_to_right():
    cfg = load_config("dmc-cheetah-run+debug")
    assert cfg.env.task == "dmc:cheetah-run" and cfg.env.action_repeat == 4
    assert cfg.model.deter_size < 200 and cfg.planner.candidates < 1000 and cfg.train.batch_size < 50
    # a later overlay wins over an earlier one
    assert load_config("dmc-cheetah-run+dmc-walker-walk").env.task == "dmc:walker-walk"
    assert load_config("debug+dmc-cheetah-run").env.max_env_steps == PRESETS["debug"]["env"]["max_env_steps"]


def test_overrides_are_typed_and_win_over_presets():
    cfg = load_config("dmc-cheetah-run+debug", ["train.batch_size=16", "loss.free_nats=2", "env.task=gym:Pendulum-v1",
                                                "train.learning_rate=3e-4"])
    assert cfg.train.batch_size == 16
    assert cfg.loss.free_nats == 2.0 and isinstance(cfg.loss.free_nats, float)
    assert cfg.env.task == "gym:Pendulum-v1"
    assert cfg.train.learning_rate == 3e-4


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=abc", ["train.batch_size", "integer"]),
    ("train.batch_size=2.5", ["train.batch_size", "integer"]),
    ("train.batch_size=true", ["train.batch_size", "integer"]),
    ("train.learning_rate=nan", ["train.learning_rate", "finite number"]),
    ("loss.free_nats=lots", ["loss.free_nats", "number"]),
    ("env.task=3", ["env.task", "string"]),
    ("train.batch_size=0", ["train.batch_size", "> 0"]),
    ("planner.top_k=2000", ["planner.top_k", "planner.candidates"]),
    ("model.family=transformer", ["model.family", "rssm"]),
    ("loss.image_fraction=0", ["loss.image_fraction", "(0, 1]"]),
    ("loss.image_fraction=1.5", ["loss.image_fraction", "(0, 1]"]),
    ("batch_size=4", ["section.field=value"]),
    ("train.batch_size", ["section.field=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as error:
        load_config("dmc-cheetah-run", [override])
    for word in words:
        assert word in str(error.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as error:
        load_config("", ["train.batch=8"])
    message = str(error.value)
    assert "train.batch" in message and "batch_size" in message and "chunk_length" in message
    with pytest.raises(ConfigError) as error:
        load_config("", ["trian.batch_size=8"])
    assert "'train'" in str(error.value) and all(s in str(error.value) for s in SECTIONS)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as error:
        load_config("dmc-cheetah-runn")
    assert "dmc-cheetah-run" in str(error.value) and "debug" in str(error.value)


@pytest.mark.parametrize("preset", ["", "dmc-cheetah-run+debug", "atari-mspacman"])
def test_yaml_round_trip(preset):
    cfg = load_config(preset, ["train.seed=7", "replay.url=redis://:pw@host:6380/0"])
    assert from_yaml(to_yaml(cfg)) == cfg


def test_yaml_file_keys_are_checked():
    text = to_yaml(Config()).replace("batch_size:", "batch_sise:")
    with pytest.raises(ConfigError, match="batch_sise"):
        from_yaml(text)
    with pytest.raises(ConfigError, match="YAML"):
        from_yaml("env: [unclosed")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.batch_size = 3  # type: ignore[misc]


def test_overlay_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="section 'train'"):
        apply_overlay(Config(), {"train": 5})


def test_derived_values():
    cfg = load_config("dmc-cheetah-run")
    d = derive(cfg)
    assert d.episode_agent_steps == 250
    assert d.updates_per_agent_step == pytest.approx(100 / 250)
    assert d.samples_per_insert == pytest.approx(100 / 250 * 50 * 50)
    assert d.min_replay_steps == 5 * 250
    assert derive(load_config("dmc-cartpole-swingup")).episode_agent_steps == 125


@pytest.mark.parametrize("family", ["ar", "dssm"])
@pytest.mark.parametrize("override, words", [
    ("loss.image_fraction=0.5", ["loss.image_fraction", "set it to 1"]),
    ("loss.overshooting_distance=2", ["loss.overshooting_distance", "set it to 0"]),
])
def test_elbo_only_loss_settings_are_refused_for_the_frame_prediction_families(family, override, words):
    with pytest.raises(ConfigError) as error:
        load_config("atari-mspacman", [f"model.family={family}", override])
    for word in words:
        assert word in str(error.value)
    load_config("atari-mspacman", ["model.family=sssm", override])  # an ELBO family takes it


def test_planet_reference_scores_cover_planets_six_tasks_and_nothing_else():
    from common.envs.tasks import ACTION_REPEAT, PLANET_AT_100_EPISODES, planet_reference
    assert set(PLANET_AT_100_EPISODES) == set(ACTION_REPEAT)
    assert planet_reference("dmc:cheetah-run") == 138.0 and planet_reference("dmc:cup-catch") == 0.0
    assert planet_reference("atari:MsPacman") is None and planet_reference("dmc:hopper-hop") is None
