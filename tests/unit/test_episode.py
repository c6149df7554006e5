"""Episode record and codec: round trips, validation and hostile bytes."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import struct

import numpy as np
import pytest

from common import episode as episode_module
from common.episode import (
    ARRAY_FIELDS, MAX_HEADER_BYTES, Episode, EpisodeError, EpisodeInfo, decode, encode,
    encode_header,
)

PREAMBLE = 12  # 8-byte magic + uint32 header length


def make_info(**overrides) -> EpisodeInfo:
    fields = dict(run="test-run", actor=3, seed=7, episode_id="test-run:3:0",
                  policy_version=2, task="cartpole-swingup", env_steps=40)
    fields.update(overrides)
    return EpisodeInfo(**fields)


def make_arrays(steps: int = 5, frame=(8, 8, 3), action_size: int | None = 2,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Random valid arrays; action_size=None gives discrete actions."""
    rng = np.random.default_rng(seed)
    if action_size is None:
        actions = rng.integers(0, 6, size=steps).astype(np.int64)  # (T,)
    else:
        actions = rng.uniform(-1, 1, size=(steps, action_size)).astype(np.float32)  # (T, A)
    return dict(
        observations=rng.integers(0, 256, size=(steps + 1, *frame), dtype=np.uint8),
        actions=actions,
        rewards=rng.normal(size=steps).astype(np.float32),
        terminals=np.zeros(steps, bool),
    )


def make_episode(**overrides) -> Episode:
    arrays = make_arrays()
    arrays.update(overrides)
    return Episode(info=make_info(), **arrays)


def split(data: bytes) -> tuple[dict, int]:
    """The parsed header and the offset where the arrays start."""
    (length,) = struct.unpack_from("<I", data, 8)
    return json.loads(data[PREAMBLE:PREAMBLE + length]), PREAMBLE + length


def rebuild(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return b"ORRERYEP" + struct.pack("<I", len(raw)) + raw + body


def with_header(data: bytes, mutate) -> bytes:
    header, start = split(data)
    mutate(header)
    return rebuild(header, data[start:])


# Round trips.

@pytest.mark.parametrize("steps,frame,action_size", [
    (1, (8, 8, 3), 1),
    (5, (8, 8, 3), 2),
    (5, (8, 8, 3), None),
    (30, (64, 64, 3), 6),
    (30, (64, 64, 3), None),
])
@pytest.mark.parametrize("terminal", [False, True])
def test_round_trip_is_bit_exact(steps, frame, action_size, terminal):
    arrays = make_arrays(steps, frame, action_size)
    arrays["terminals"][-1] = terminal
    original = Episode(info=make_info(), **arrays)
    data = encode(original)
    restored = decode(data, obs_shape=frame)
    for name in ARRAY_FIELDS:
        got, want = getattr(restored, name), getattr(original, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), name
    assert restored.info == original.info
    assert restored.length == steps
    assert restored.discrete == (action_size is None)
    assert restored.nbytes == original.nbytes == len(data) - split(data)[1]
    np.testing.assert_array_equal(restored.discounts, np.float32(1) - arrays["terminals"])
    assert restored.discounts.dtype == np.float32


def test_decoded_arrays_do_not_alias_the_buffer():
    buffer = bytearray(encode(make_episode()))
    restored = decode(memoryview(buffer))
    before = restored.observations.copy()
    buffer[-200:] = bytes(200)
    assert np.array_equal(restored.observations, before)
    assert all(getattr(restored, name).flags.owndata for name in ARRAY_FIELDS)


def test_header_layout_puts_observations_first_as_one_block():
    original = make_episode()
    data = encode(original)
    header, start = split(data)
    assert data[:8] == b"ORRERYEP"
    assert header == encode_header(original)
    assert [spec["name"] for spec in header["arrays"]] == list(ARRAY_FIELDS)
    assert ARRAY_FIELDS[0] == "observations"
    frame = original.observations[0].nbytes
    t0, t1 = 2, 4  # frames of the chunk [t0, t1) are one byte range
    chunk = data[start + t0 * frame:start + t1 * frame]
    assert chunk == original.observations[t0:t1].tobytes()


def test_no_pickle_anywhere():
    data = encode(make_episode())
    assert not data.startswith(b"\x80")  # pickle protocol 2+ opcode
    assert b"\x93NUMPY" not in data  # np.save header
    source = inspect.getsource(episode_module)
    assert "import pickle" not in source and "np.load(" not in source
    assert not any("pickle" in name.lower() for name in vars(episode_module))
    with pytest.raises(EpisodeError, match="magic"):
        decode(pickle.dumps(make_episode().observations))
    with pytest.raises(EpisodeError, match="magic"):
        decode(b"\x93NUMPY" + bytes(64))


# Validation of in-memory episodes.

@pytest.mark.parametrize("overrides,match", [
    (dict(observations=make_arrays()["observations"].astype(np.float32)),
     r"Episode\.observations: dtype float32, expected uint8 frames.*np\.asarray"),
    (dict(rewards=make_arrays()["rewards"].astype(np.float64)),
     r"Episode\.rewards: dtype float64, expected float32"),
    (dict(actions=make_arrays()["actions"].astype(np.float64)), r"Episode\.actions: dtype float64"),
    (dict(actions=make_arrays(action_size=None)["actions"].astype(np.int32)),
     r"Episode\.actions: dtype int32"),
    (dict(terminals=np.zeros(5, np.uint8)), r"Episode\.terminals: dtype uint8, expected bool"),
    (dict(rewards=make_arrays()["rewards"].astype(">f4")), r"Episode\.rewards: dtype >f4"),
    (dict(rewards=[0.0] * 5), r"Episode\.rewards: got list .*, expected a numpy array"),
    (dict(observations=make_arrays()["observations"][:-1]),
     r"Episode\.observations: 5 frames for T=5 steps, expected T\+1=6"),
    (dict(actions=make_arrays(steps=6)["actions"]), r"Episode\.actions: 6 steps, expected T=5"),
    (dict(terminals=np.zeros(4, bool)), r"Episode\.terminals: 4 steps, expected T=5"),
    (dict(observations=make_arrays(steps=6)["observations"]), r"7 frames for T=5 steps"),
    (dict(observations=make_arrays()["observations"][..., 0]), r"Episode\.observations: .*ndim 3"),
    (dict(actions=np.zeros((5, 0), np.float32)), r"Episode\.actions: shape \(T, 0\)"),
    (dict(actions=np.zeros(5, np.float32)), r"Episode\.actions: shape \(5,\) has ndim 1"),
    (dict(actions=np.zeros((5, 1), np.int64)), r"Episode\.actions: shape \(5, 1\) has ndim 2"),
])
def test_rejects_malformed_arrays(overrides, match):
    with pytest.raises(EpisodeError, match=match):
        make_episode(**overrides)


def test_rejects_nan_reward_naming_the_step():
    rewards = make_arrays(steps=20)["rewards"]
    rewards[17] = np.nan
    with pytest.raises(EpisodeError, match=r"Episode\.rewards: NaN or inf at step 17; rewards must "
                                           r"be finite \(check the environment's reward\)"):
        Episode(info=make_info(), **{**make_arrays(steps=20), "rewards": rewards})


def test_rejects_inf_action_naming_the_step():
    actions = make_arrays()["actions"]
    actions[3, 1] = -np.inf
    with pytest.raises(EpisodeError, match=r"Episode\.actions: NaN or inf at step 3"):
        make_episode(actions=actions)


def test_rejects_negative_discrete_action():
    actions = make_arrays(action_size=None)["actions"]
    actions[2] = -1
    with pytest.raises(EpisodeError, match=r"Episode\.actions: negative discrete action -1 at step 2"):
        make_episode(actions=actions)


@pytest.mark.parametrize("step", [0, 3])
def test_rejects_terminal_before_the_last_step(step):
    terminals = np.zeros(5, bool)
    terminals[step] = True
    with pytest.raises(EpisodeError, match=rf"Episode\.terminals: True at step {step} of T=5"):
        make_episode(terminals=terminals)


def test_rejects_empty_episode():
    with pytest.raises(EpisodeError, match=r"T=0 steps"):
        Episode(info=make_info(), **make_arrays(steps=0))


def test_validate_limits_and_frame_shape():
    original = make_episode()
    original.validate(obs_shape=(8, 8, 3), max_steps=5, max_bytes=original.nbytes)
    with pytest.raises(EpisodeError, match=r"frame shape \(8, 8, 3\), expected \(H, W, C\)=\(64, 64, 3\)"):
        original.validate(obs_shape=(64, 64, 3))
    with pytest.raises(EpisodeError, match=r"T=5 steps, at most 4"):
        original.validate(max_steps=4)
    with pytest.raises(EpisodeError, match=r"array bytes, at most"):
        original.validate(max_bytes=original.nbytes - 1)


def test_encode_revalidates_mutated_arrays():
    original = make_episode()
    original.rewards[1] = np.inf
    with pytest.raises(EpisodeError, match=r"step 1"):
        encode(original)


# EpisodeInfo.

@pytest.mark.parametrize("overrides,field", [
    (dict(episode_id=""), "episode_id"),
    (dict(episode_id="has space"), "episode_id"),
    (dict(episode_id="a/b"), "episode_id"),
    (dict(episode_id="x" * 129), "episode_id"),
    (dict(episode_id="ok\n"), "episode_id"),
    (dict(episode_id=5), "episode_id"),
    (dict(run=""), "run"),
    (dict(task="t" * 257), "task"),
    (dict(actor=-1), "actor"),
    (dict(seed=1.0), "seed"),
    (dict(env_steps=True), "env_steps"),
    (dict(policy_version="2"), "policy_version"),
])
def test_info_rejects_bad_fields(overrides, field):
    with pytest.raises(EpisodeError, match=rf"EpisodeInfo\.{field}"):
        make_info(**overrides)


def test_info_json_round_trip_and_key_checks():
    info = make_info(episode_id="A-z_0.9:" + "x" * 120)
    assert EpisodeInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    fields = info.to_json()
    with pytest.raises(EpisodeError, match=r"EpisodeInfo\.seed: missing"):
        EpisodeInfo.from_json({k: v for k, v in fields.items() if k != "seed"})
    with pytest.raises(EpisodeError, match=r"EpisodeInfo\.colour: unknown key"):
        EpisodeInfo.from_json({**fields, "colour": "red"})
    with pytest.raises(EpisodeError, match=r"EpisodeInfo\.actor"):
        EpisodeInfo.from_json({**fields, "actor": "3"})
    with pytest.raises(EpisodeError, match=r"expected a JSON object"):
        EpisodeInfo.from_json([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.seed = 1


# Hostile bytes.

def test_rejects_truncation_at_every_region():
    data = encode(make_episode())
    _, start = split(data)
    cuts = {0: "preamble", 5: "preamble", 11: "preamble", 12: "past the end", start - 1: "past the end",
            start: "truncated: expected", start + 100: "truncated: expected",
            len(data) - 1: "truncated: expected"}
    for cut, match in cuts.items():
        with pytest.raises(EpisodeError, match=match):
            decode(data[:cut])


def test_truncation_message_counts_bytes():
    data = encode(make_episode())
    _, start = split(data)
    expected = len(data) - start
    with pytest.raises(EpisodeError, match=rf"expected {expected} bytes of arrays, got {expected - 3}"):
        decode(data[:-3])


@pytest.mark.parametrize("mutate,match", [
    (lambda d: b"ORRERYEQ" + d[8:], "wrong magic"),
    (lambda d: d[:8] + struct.pack("<I", MAX_HEADER_BYTES + 1) + d[12:], "oversized header"),
    (lambda d: d[:8] + struct.pack("<I", 2**32 - 1) + d[12:], "oversized header"),
    (lambda d: d + b"\x00", "1 trailing bytes"),
    (lambda d: d + bytes(1000), "1000 trailing bytes"),
])
def test_rejects_bad_framing(mutate, match):
    with pytest.raises(EpisodeError, match=match):
        decode(mutate(encode(make_episode())))


def set_dtype(name, dtype):
    def mutate(header):
        header["arrays"][ARRAY_FIELDS.index(name)]["dtype"] = dtype
    return mutate


def set_shape(name, shape):
    def mutate(header):
        header["arrays"][ARRAY_FIELDS.index(name)]["shape"] = shape
    return mutate


@pytest.mark.parametrize("mutate,match", [
    (lambda h: h.update(extra=1), r"header\.extra: unknown key"),
    (lambda h: h.pop("info"), r"header\.info: missing"),
    (lambda h: h.update(format="npy"), "header.format"),
    (lambda h: h.update(version=2), "header.version"),
    (lambda h: h.update(version=1.0), "header.version"),
    (lambda h: h["info"].update(colour="red"), r"EpisodeInfo\.colour: unknown key"),
    (lambda h: h["info"].pop("task"), r"EpisodeInfo\.task: missing"),
    (lambda h: h["info"].update(episode_id="../etc"), r"EpisodeInfo\.episode_id"),
    (lambda h: h["arrays"].pop(), "must list 4 arrays"),
    (lambda h: h["arrays"].append(dict(h["arrays"][0])), "must list 4 arrays"),
    (lambda h: h["arrays"].reverse(), "where 'observations' belongs"),
    (lambda h: h["arrays"][2].update(extra=1), r"header\.arrays\[rewards\]\.extra: unknown key"),
    (set_dtype("rewards", "<f8"), r"rewards: dtype '<f8' not allowed"),
    (set_dtype("observations", "<f4"), r"observations: dtype '<f4' not allowed"),
    (set_dtype("actions", "<i8"), "truncated|trailing|Episode.actions"),
    (set_dtype("terminals", "<u1"), "terminals: dtype"),
    (set_dtype("actions", ["<f4"]), "actions: dtype"),
    (set_shape("rewards", [-5]), "non-negative integers"),
    (set_shape("rewards", [5.0]), "non-negative integers"),
    (set_shape("rewards", [True] * 5), "non-negative integers"),
    (set_shape("rewards", "5"), "non-negative integers"),
    (set_shape("observations", [2**40, 2**40, 1, 1]), "oversized episode"),
    (set_shape("actions", [10, 1]), "Episode.actions: 10 steps, expected T=5"),
    (set_shape("actions", [10, 2]), "truncated: expected"),
])
def test_rejects_bad_header(mutate, match):
    with pytest.raises(EpisodeError, match=match):
        decode(with_header(encode(make_episode()), mutate))


def test_rejects_bytes_over_max_bytes():
    original = make_episode()
    data = encode(original)
    assert decode(data, max_bytes=original.nbytes).length == 5
    with pytest.raises(EpisodeError, match=rf"oversized episode.*max_bytes={original.nbytes - 1}"):
        decode(data, max_bytes=original.nbytes - 1)


def test_rejects_wrong_frame_shape_on_decode():
    with pytest.raises(EpisodeError, match=r"expected \(H, W, C\)=\(64, 64, 3\)"):
        decode(encode(make_episode()), obs_shape=(64, 64, 3))


def test_rejects_non_boolean_terminal_bytes():
    data = bytearray(encode(make_episode()))
    data[-2] = 7  # a terminal byte that is neither 0 nor 1
    with pytest.raises(EpisodeError, match=r"^decode: terminals holds bytes other than 0 and 1"):
        decode(bytes(data))


def test_decode_validates_the_episode():
    arrays = make_arrays()
    data = bytearray(encode(Episode(info=make_info(), **arrays)))
    reward_offset = len(data) - 5 - 4 * 5  # rewards (T,) float32 sit before terminals (T,) bool
    data[reward_offset + 8:reward_offset + 12] = np.float32(np.nan).tobytes()
    with pytest.raises(EpisodeError, match=r"Episode\.rewards: NaN or inf at step 2"):
        decode(bytes(data))


HEADER_MUTATIONS = {
    "invalid utf-8": lambda raw: raw[:5] + b"\xff\xfe" + raw[7:],
    "not json": lambda raw: b"{" + raw[1:].replace(b":", b"=", 1),
    "json list": lambda raw: b"[" + b" " * (len(raw) - 2) + b"]",
    "json null": lambda raw: b"null" + b" " * (len(raw) - 4),
    "deep nesting": lambda raw: b"[" * 20_000 + b"]" * 20_000,
    "duplicate key": lambda raw: raw[:-1] + b',"version":1}',
    "nan constant": lambda raw: raw.replace(b'"version":1', b'"version":NaN'),
    "huge integer": lambda raw: raw.replace(b'"seed":7', b'"seed":' + b"9" * 5000),
    "shape with many dims": lambda raw: raw.replace(b'"shape":[5]', b'"shape":[' + b"1," * 100 + b"5]", 1),
    "zero-size huge dims": lambda raw: raw.replace(b'"shape":[6,8,8,3]', b'"shape":[0,99999999999999999999,8,3]'),
    "negative env steps": lambda raw: raw.replace(b'"env_steps":40', b'"env_steps":-40'),
    "bool actor": lambda raw: raw.replace(b'"actor":3', b'"actor":true'),
}


@pytest.mark.parametrize("name", sorted(HEADER_MUTATIONS))
def test_corrupted_header_raises_only_episode_error(name):
    data = encode(make_episode())
    header, start = split(data)
    raw = data[PREAMBLE:start]
    mutated = HEADER_MUTATIONS[name](raw)
    assert mutated != raw, name
    with pytest.raises(EpisodeError):
        decode(b"ORRERYEP" + struct.pack("<I", len(mutated)) + mutated + data[start:])


@pytest.mark.parametrize("seed", range(20))
def test_random_byte_flips_raise_only_episode_error_or_decode(seed):
    rng = np.random.default_rng(seed)
    data = bytearray(encode(make_episode()))
    _, start = split(bytes(data))
    for position in rng.integers(0, start, size=3):  # corrupt the preamble and header
        data[position] = rng.integers(0, 256)
    try:
        decode(bytes(data))
    except EpisodeError:
        pass


def test_decode_accepts_bytes_views_and_rejects_other_types():
    data = encode(make_episode())
    assert decode(bytearray(data)).length == 5
    assert decode(memoryview(data)).length == 5
    assert decode(np.frombuffer(data, np.uint8).data).length == 5
    with pytest.raises(TypeError):
        decode(data.decode("latin-1"))


def test_rejects_fewer_env_steps_than_agent_steps():
    arrays = make_arrays(steps=5)
    with pytest.raises(EpisodeError, match="EpisodeInfo.env_steps: 4 for T=5"):
        Episode(info=make_info(env_steps=4), **arrays)
    assert Episode(info=make_info(env_steps=5), **arrays).length == 5
