"""The episode record and its byte codec: the contract between actors and replay.

Time alignment (DESIGN.md): an episode stores T+1 observations and T actions,
rewards and terminals. ``a_tm1`` is the action taken before observing ``o_t``,
and reward ``r_t`` follows action ``a_t``::

    o_0   o_1   o_2   ...   o_T          observations  (T+1, H, W, C) uint8
       a_0   a_1   ...   a_{T-1}         actions       (T, A) float32 | (T,) int64
       r_0   r_1   ...   r_{T-1}         rewards       (T,) float32
       d_0   d_1   ...   d_{T-1}         terminals     (T,) bool; d_t: o_{t+1} is terminal

Wire format (no pickle, no np.load; every field is checked before use)::

    +----------+-------------+---------------------+--------------+---------+---------+-----------+
    | ORRERYEP | header len  | header (UTF-8 JSON) | observations | actions | rewards | terminals |
    | 8 bytes  | uint32 LE   | header len bytes    | raw little-endian C-order bytes, no padding   |
    +----------+-------------+---------------------+--------------+---------+---------+-----------+

The header is ``{"format": "orrery.episode", "version": 1, "info": {...},
"arrays": [{"name", "dtype", "shape"}, ...]}`` with the arrays in
``ARRAY_FIELDS`` order; offsets follow from that order and the shapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from typing import Any

import numpy as np

MAX_STEPS = 100_000  # most agent steps T in one episode
MAX_BYTES = 512 * 2**20  # most array bytes in one episode; a hard cap on every Episode
MAX_HEADER_BYTES = 64 * 2**10  # most bytes of JSON header that decode will read

FORMAT = "orrery.episode"
VERSION = 1
MAGIC = b"ORRERYEP"
_PREAMBLE = struct.Struct("<8sI")  # magic, header length

# Observations come first so that the frames of any chunk [t0, t1) are one byte
# range of one contiguous block: bytes [t0 * frame, t1 * frame) of the
# observations, frame = H * W * C. Replay relies on this; do not reorder.
ARRAY_FIELDS = ("observations", "actions", "rewards", "terminals")

# Allowed wire dtype per array -> the in-memory dtype it decodes to.
_WIRE_DTYPES: dict[str, dict[str, np.dtype]] = {
    "observations": {"<u1": np.dtype(np.uint8)},
    "actions": {"<f4": np.dtype(np.float32), "<i8": np.dtype(np.int64)},
    "rewards": {"<f4": np.dtype(np.float32)},
    "terminals": {"|b1": np.dtype(np.bool_)},
}

_EPISODE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_STR_FIELDS = ("run", "episode_id", "task")
_MAX_STR = 256
_MAX_INT = 2**63 - 1


class EpisodeError(ValueError):
    """An episode, its metadata or its encoded bytes are invalid."""


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """Metadata of one episode, stored next to its arrays as JSON."""

    run: str
    """Run name, the replay namespace (non-empty, at most 256 characters)."""
    actor: int
    """Index of the actor that collected the episode."""
    seed: int
    """Environment seed of the episode."""
    episode_id: str
    """Unique id, the idempotency key in replay; matches [A-Za-z0-9_.:-]{1,128}."""
    policy_version: int
    """Version of the published weights the actor planned with."""
    task: str
    """Task name, e.g. 'cartpole-swingup' (non-empty, at most 256 characters)."""
    env_steps: int
    """Environment steps actually taken, counting action repeat."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            where = f"EpisodeInfo.{field.name}"
            if field.name in _STR_FIELDS:
                if not isinstance(value, str) or not 1 <= len(value) <= _MAX_STR:
                    raise EpisodeError(
                        f"{where}: got {_describe(value)}, expected a non-empty string "
                        f"of at most {_MAX_STR} characters")
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
                raise EpisodeError(
                    f"{where}: got {_describe(value)}, expected a non-negative integer "
                    f"below 2**63 (not a bool or float)")
        if not _EPISODE_ID.fullmatch(self.episode_id):
            raise EpisodeError(
                f"EpisodeInfo.episode_id: got {self.episode_id[:140]!r}, expected 1..128 "
                f"characters from [A-Za-z0-9_.:-]; build it from run, actor and a counter")

    def to_json(self) -> dict[str, Any]:
        """The metadata as a JSON-ready dict (field name -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> EpisodeInfo:
        """Parse `to_json` output; rejects missing or extra keys and wrong types."""
        names = tuple(f.name for f in dataclasses.fields(cls))
        _check_keys("EpisodeInfo", d, names)
        return cls(**{n: d[n] for n in names})


@dataclasses.dataclass(frozen=True, eq=False)
class Episode:
    """One episode: T+1 frames and T actions, rewards and terminals.

    Validated on construction, so an invalid Episode cannot exist. The arrays
    are not copied; do not modify them afterwards (`encode` validates again).
    """

    observations: np.ndarray
    """o_0..o_T, (T+1, H, W, C) uint8."""
    actions: np.ndarray
    """a_0..a_{T-1}: (T, A) float32 continuous, or (T,) int64 discrete (>= 0)."""
    rewards: np.ndarray
    """r_0..r_{T-1}, (T,) float32, finite; r_t follows a_t."""
    terminals: np.ndarray
    """(T,) bool; terminals[t] means o_{t+1} is a true terminal (not a time limit)."""
    info: EpisodeInfo
    """Metadata: run, actor, seed, id, policy version, task, env steps."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def length(self) -> int:
        """T, the number of agent steps (actions)."""
        return int(self.rewards.shape[0])

    @property
    def discounts(self) -> np.ndarray:
        """(T,) float32, 1 - terminals: 0 where o_{t+1} is terminal."""
        return (1.0 - self.terminals).astype(np.float32)

    @property
    def discrete(self) -> bool:
        """Whether actions are discrete indices, (T,) int64."""
        return self.actions.ndim == 1

    @property
    def nbytes(self) -> int:
        """Total bytes of the four arrays (the encoded size minus the header)."""
        return sum(getattr(self, name).nbytes for name in ARRAY_FIELDS)

    def validate(self, *, obs_shape: tuple[int, int, int] | None = None,
                 max_steps: int = MAX_STEPS, max_bytes: int = MAX_BYTES) -> None:
        """Raise EpisodeError unless the episode is well formed.

        Checks types, exact dtypes (no casting), ndim, T+1 vs T shapes, T >= 1,
        finite actions and rewards, non-negative discrete actions, a terminal
        only at the last step, the frame shape (H, W, C) if `obs_shape` is
        given, and the `max_steps` / `max_bytes` limits.
        """
        if not isinstance(self.info, EpisodeInfo):
            raise EpisodeError(f"Episode.info: got {_describe(self.info)}, expected EpisodeInfo")
        obs, act, rew, term = self.observations, self.actions, self.rewards, self.terminals
        _check_array("observations", obs, 4, np.uint8, "uint8 frames (0..255)", "np.uint8")
        if getattr(act, "dtype", None) == np.int64:
            _check_array("actions", act, 1, np.int64, "int64 indices (T,)", "np.int64")
        else:
            _check_array("actions", act, 2, np.float32,
                         "float32 (T, A) for continuous or int64 (T,) for discrete actions",
                         "np.float32")
        _check_array("rewards", rew, 1, np.float32, "float32", "np.float32")
        _check_array("terminals", term, 1, np.bool_, "bool", "bool")

        steps = rew.shape[0]
        if steps < 1:
            raise EpisodeError(
                "Episode.rewards: T=0 steps; an episode needs at least one action "
                "(T+1 >= 2 observations)")
        for name, value in (("actions", act), ("terminals", term)):
            if value.shape[0] != steps:
                raise EpisodeError(f"Episode.{name}: {value.shape[0]} steps, expected T={steps} "
                                   f"like rewards (one per action)")
        if obs.shape[0] != steps + 1:
            raise EpisodeError(
                f"Episode.observations: {obs.shape[0]} frames for T={steps} steps, expected "
                f"T+1={steps + 1}; keep the first observation o_0 (before any action)")
        if self.info.env_steps < steps:
            raise EpisodeError(
                f"EpisodeInfo.env_steps: {self.info.env_steps} for T={steps} agent steps; every "
                f"agent step takes at least one env step (count the action repeat)")
        if steps > max_steps:
            raise EpisodeError(
                f"Episode.rewards: T={steps} steps, at most {max_steps} allowed; split the episode")
        if act.ndim == 2 and act.shape[1] < 1:
            raise EpisodeError("Episode.actions: shape (T, 0), expected action size A >= 1")
        if min(obs.shape[1:]) < 1:
            raise EpisodeError(f"Episode.observations: frame shape {obs.shape[1:]}, expected "
                               f"H, W, C >= 1")
        if obs_shape is not None and tuple(obs.shape[1:]) != tuple(obs_shape):
            raise EpisodeError(
                f"Episode.observations: frame shape {tuple(obs.shape[1:])}, expected "
                f"(H, W, C)={tuple(obs_shape)}; check the environment's image size")

        _check_finite("rewards", rew, "check the environment's reward")
        if self.discrete:
            negative = np.flatnonzero(act < 0)
            if negative.size:
                raise EpisodeError(
                    f"Episode.actions: negative discrete action {act[negative[0]]} at step "
                    f"{negative[0]}; discrete actions are indices >= 0")
        else:
            _check_finite("actions", act, "check the planner's output")
        early = np.flatnonzero(term[:-1])
        if early.size:
            raise EpisodeError(
                f"Episode.terminals: True at step {early[0]} of T={steps}; only the last step "
                f"may be terminal; end the episode at the first terminal")
        if self.nbytes > max_bytes:
            raise EpisodeError(
                f"Episode: {self.nbytes} array bytes, at most {max_bytes} allowed; "
                f"split the episode or shrink the frames")


def encode_header(episode: Episode) -> dict[str, Any]:
    """The JSON header of `episode`: format, version, info and array specs in order."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "info": episode.info.to_json(),
        "arrays": [_array_spec(name, getattr(episode, name)) for name in ARRAY_FIELDS],
    }


def encode(episode: Episode) -> bytes:
    """Serialise `episode` into the wire format described in the module docstring."""
    if not isinstance(episode, Episode):
        raise TypeError(f"encode: expected an Episode, got {type(episode).__name__}")
    episode.validate()  # The arrays are mutable; catch changes since construction.
    header = encode_header(episode)
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise EpisodeError(f"encode: header of {len(header_bytes)} bytes exceeds "
                           f"MAX_HEADER_BYTES={MAX_HEADER_BYTES}")
    parts = [_PREAMBLE.pack(MAGIC, len(header_bytes)), header_bytes]
    for spec in header["arrays"]:
        array = getattr(episode, spec["name"])
        parts.append(np.ascontiguousarray(array, dtype=np.dtype(spec["dtype"])).tobytes())
    return b"".join(parts)


def decode(data: bytes | bytearray | memoryview, *,
           obs_shape: tuple[int, int, int] | None = None,
           max_bytes: int = MAX_BYTES) -> Episode:
    """Parse and validate bytes from `encode`; any defect raises EpisodeError.

    The arrays are copied, so the Episode holds no reference to `data`.
    `max_bytes` can only tighten the limit: every Episode obeys MAX_BYTES.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode: expected bytes or memoryview, got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise EpisodeError("decode: the buffer is not contiguous; pass bytes(data)")
    view = view.cast("B") if (view.format, view.ndim) != ("B", 1) else view
    if len(view) < _PREAMBLE.size:
        raise EpisodeError(f"decode: truncated: {len(view)} bytes is shorter than the "
                           f"{_PREAMBLE.size}-byte preamble")
    magic, header_len = _PREAMBLE.unpack_from(view)
    if magic != MAGIC:
        raise EpisodeError(f"decode: wrong magic {magic!r}, expected {MAGIC!r}; "
                           f"not an encoded orrery episode")
    if header_len > MAX_HEADER_BYTES:
        raise EpisodeError(f"decode: oversized header of {header_len} bytes, at most "
                           f"MAX_HEADER_BYTES={MAX_HEADER_BYTES}")
    start = _PREAMBLE.size + header_len
    if start > len(view):
        raise EpisodeError(f"decode: truncated: header of {header_len} bytes runs past the "
                           f"end of {len(view)} bytes")
    header = _load_header(view[_PREAMBLE.size:start])
    info, specs = _parse_header(header)

    sizes = [math.prod(shape) * np.dtype(wire).itemsize for _, wire, shape in specs]
    if sum(sizes) > max_bytes:
        raise EpisodeError(f"decode: oversized episode: header promises {sum(sizes)} array "
                           f"bytes, at most max_bytes={max_bytes}")
    available = len(view) - start
    if available < sum(sizes):
        raise EpisodeError(f"decode: truncated: expected {sum(sizes)} bytes of arrays, "
                           f"got {available}")
    if available > sum(sizes):
        raise EpisodeError(f"decode: {available - sum(sizes)} trailing bytes after the arrays")

    arrays: dict[str, np.ndarray] = {}
    offset = start
    for (name, wire, shape), size in zip(specs, sizes):
        if wire == "|b1" and np.frombuffer(view, np.uint8, size, offset).max(initial=0) > 1:
            raise EpisodeError(f"decode: {name} holds bytes other than 0 and 1; expected bool")
        try:
            flat = np.frombuffer(view, wire, size // np.dtype(wire).itemsize, offset)
            # astype copies (and fixes byte order on big-endian hosts): no reference to data.
            arrays[name] = flat.reshape(shape).astype(_WIRE_DTYPES[name][wire])
        except (ValueError, OverflowError) as error:
            raise EpisodeError(f"decode: {name}: cannot build shape {list(shape)}: "
                               f"{error}") from None
        offset += size
    episode = Episode(info=info, **arrays)
    if obs_shape is not None:
        episode.validate(obs_shape=obs_shape)
    return episode


def _check_array(name: str, value: Any, ndim: int, dtype: type, expected: str,
                 convert: str) -> None:
    if not isinstance(value, np.ndarray):
        raise EpisodeError(f"Episode.{name}: got {_describe(value)}, expected a numpy array; "
                           f"convert with np.asarray({name}, {convert})")
    if value.dtype != dtype:
        raise EpisodeError(
            f"Episode.{name}: dtype {value.dtype}, expected {expected}; convert with "
            f"np.asarray({name}, {convert}) before building the episode")
    if value.ndim != ndim:
        raise EpisodeError(
            f"Episode.{name}: shape {value.shape} has ndim {value.ndim}, expected {ndim} "
            f"({expected})")


def _check_finite(name: str, value: np.ndarray, hint: str) -> None:
    bad = np.flatnonzero(~np.isfinite(value).reshape(value.shape[0], -1).all(axis=1))
    if bad.size:
        raise EpisodeError(f"Episode.{name}: NaN or inf at step {bad[0]}; {name} must be "
                           f"finite ({hint})")


def _array_spec(name: str, array: np.ndarray) -> dict[str, Any]:
    wire = next(w for w, d in _WIRE_DTYPES[name].items() if d == array.dtype)
    return {"name": name, "dtype": wire, "shape": [int(n) for n in array.shape]}


def _load_header(raw: memoryview) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise EpisodeError(f"decode: duplicate key in header object {keys}")
        return dict(pairs)

    try:
        return json.loads(bytes(raw).decode("utf-8"), object_pairs_hook=no_duplicates)
    except EpisodeError:
        raise
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError, JSONDecodeError
        raise EpisodeError(f"decode: header is not valid UTF-8 JSON: {error}") from None


def _parse_header(header: Any) -> tuple[EpisodeInfo, list[tuple[str, str, tuple[int, ...]]]]:
    """Check the header's structure; return the info and (name, wire dtype, shape) per array."""
    _check_keys("decode: header", header, ("format", "version", "info", "arrays"))
    if header["format"] != FORMAT:
        raise EpisodeError(f"decode: header.format {header['format']!r}, expected {FORMAT!r}")
    if type(header["version"]) is not int or header["version"] != VERSION:
        raise EpisodeError(f"decode: header.version {header['version']!r}, this code reads "
                           f"version {VERSION}; upgrade orrery")
    info = EpisodeInfo.from_json(header["info"])
    arrays = header["arrays"]
    if not isinstance(arrays, list) or len(arrays) != len(ARRAY_FIELDS):
        raise EpisodeError(f"decode: header.arrays must list {len(ARRAY_FIELDS)} arrays "
                           f"{list(ARRAY_FIELDS)}")
    specs = []
    for name, spec in zip(ARRAY_FIELDS, arrays):
        _check_keys(f"decode: header.arrays[{name}]", spec, ("name", "dtype", "shape"))
        if spec["name"] != name:
            raise EpisodeError(f"decode: header.arrays: got {spec['name']!r} where {name!r} "
                               f"belongs; expected the order {list(ARRAY_FIELDS)}")
        if not isinstance(spec["dtype"], str) or spec["dtype"] not in _WIRE_DTYPES[name]:
            raise EpisodeError(f"decode: {name}: dtype {spec['dtype']!r} not allowed, "
                               f"expected one of {list(_WIRE_DTYPES[name])}")
        shape = spec["shape"]
        if not isinstance(shape, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise EpisodeError(f"decode: {name}: shape {shape!r}, expected a list of "
                               f"non-negative integers")
        specs.append((name, spec["dtype"], tuple(shape)))
    return info, specs


def _check_keys(where: str, value: Any, keys: tuple[str, ...]) -> None:
    """Raise unless `value` is a dict with exactly `keys`, naming the first odd key."""
    if not isinstance(value, dict):
        raise EpisodeError(f"{where}: got {_describe(value)}, expected a JSON object")
    odd = [(k, "missing") for k in keys if k not in value]
    odd += [(k, "unknown key") for k in value if k not in keys]
    if odd:
        raise EpisodeError(f"{where}.{odd[0][0]}: {odd[0][1]}; expected exactly the keys "
                           f"{list(keys)}")


def _describe(value: Any) -> str:
    """Type and a short repr of `value` for error messages."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.set_int_max_str_digits)
        text = "<too long to print>"
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
