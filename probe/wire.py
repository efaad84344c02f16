"""Wire frames: versioned msgpack maps, decoded with limits (docs/frames.md).

The same bytes travel over ZeroMQ and into recordings. msgpack keeps NaN and ±Inf exactly, which
JSON encoders do not, and it never executes anything it reads (no pickle anywhere).
"""

from __future__ import annotations

import struct
import time
from typing import Any

import msgpack
import numpy as np

SCHEMA_VERSION = 1
KINDS = frozenset({"meta", "facts", "steps", "alert", "end", "exit", "hb"})

# A frame holds at most a few thousand steps of a few hundred series; 64 MiB is far above any
# real frame and bounds what a hostile peer can make a reader allocate.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Real frames nest 4 deep (frame → facts → model → layers → layer); 16 leaves room for user facts.
MAX_DEPTH = 16


class FrameError(ValueError):
    """A frame that cannot be used: not msgpack, too big, too deep, or not of a known schema."""


_packer = msgpack.Packer(use_bin_type=True)


def encode(frame: dict[str, Any]) -> bytes:
    """Encode one frame. The caller owns the envelope keys (see `envelope`)."""
    return _packer.pack(frame)


def envelope(kind: str, run: str, rank: int, seq: int, step: int, **body: Any) -> dict[str, Any]:
    """A frame map with the envelope every frame carries."""
    frame = {"v": SCHEMA_VERSION, "kind": kind, "run": run, "rank": rank, "seq": seq, "step": step, "t": time.time()}
    frame.update(body)
    return frame


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of containers, stopping as soon as `limit` is passed (iterative: no recursion limit)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        item, d = stack.pop()
        children: Any
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((child, d + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def decode(data: bytes | bytearray | memoryview, *, arrays: bool = False) -> dict[str, Any]:
    """Decode and validate one frame, or raise FrameError saying what is wrong with it.

    A steps frame's packed fields (see `pack_steps`) come back as lists, as if they had been sent as lists;
    with `arrays`, as numpy arrays (`steps`, `times`) and `Floats` (columns), read with no copy."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        frame = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            # Extension types are never produced by accmon: refuse them rather than hand them on.
            ext_hook=_refuse_ext,
            timestamp=1,  # msgpack timestamps (never produced by accmon) become plain float seconds
        )
    except FrameError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise FrameError(f"not a msgpack frame: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(frame, dict):
        raise FrameError(f"frame is a {type(frame).__name__}, not a map")
    v = frame.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:  # `true == 1` in Python: a bool is no version
        raise FrameError(f"unknown frame schema version {v!r} (this accmon reads version {SCHEMA_VERSION}; upgrade accmon?)")
    kind = frame.get("kind")
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    # Columns are validated as flat lists below; walking them here too would cost as much as decoding.
    nested = {k: val for k, val in frame.items() if k not in _FLAT_KEYS} if kind == "steps" else frame
    if _depth(nested, MAX_DEPTH) > MAX_DEPTH:
        raise FrameError(f"frame nests deeper than {MAX_DEPTH} levels")
    for key, typ in (("run", str), ("rank", int), ("seq", int), ("step", int)):
        if not isinstance(frame.get(key), typ) or isinstance(frame.get(key), bool):
            raise FrameError(f"{kind} frame has no valid {key!r} field")
    if kind == "steps":
        _check_steps(frame, arrays)
    return frame


def _refuse_ext(code: int, data: bytes) -> None:
    raise FrameError(f"msgpack extension type {code} is not part of the accmon schema")


_FLAT_KEYS = frozenset({"steps", "times", "cols", "hists"})
# Type sets are checked with map(type, ...), which runs in C: per-value isinstance loops cost more than decoding.
_STEP_TYPES = {int}
_NUMBER_TYPES = {int, float, type(None)}


def _check_steps(frame: dict[str, Any], arrays: bool) -> None:
    steps = frame.get("steps")
    if isinstance(steps, bytes):
        if len(steps) % 8:
            raise FrameError("steps frame: packed 'steps' is not a whole number of int64 values")
        packed = np.frombuffer(steps, dtype=_I8)
        frame["steps"] = steps = packed if arrays else packed.tolist()
    elif not isinstance(steps, list) or not set(map(type, steps)) <= _STEP_TYPES:
        raise FrameError("steps frame has no valid 'steps' list")
    n = len(steps)
    times = frame.get("times")
    if isinstance(times, bytes):
        if len(times) != 8 * n:
            raise FrameError("steps frame: 'times' does not match 'steps'")
        packed = np.frombuffer(times, dtype=_F8)
        frame["times"] = packed if arrays else packed.tolist()
    elif times is not None and (not isinstance(times, list) or len(times) != n or not set(map(type, times)) <= _NUMBER_TYPES):
        raise FrameError("steps frame: 'times' does not match 'steps'")
    cols = frame.setdefault("cols", {})  # readers may count on it: a frame of steps with no values has {}
    if not isinstance(cols, dict):
        raise FrameError("steps frame: 'cols' is not a map")
    for name, values in cols.items():
        if isinstance(values, bytes):
            if len(values) != 8 * n:
                raise FrameError(f"steps frame: column {name!r} does not have {n} values")
            col = _unpack_floats(values)
            cols[name] = col if arrays else col.tolist()
            continue
        if not isinstance(values, list) or len(values) != n:
            raise FrameError(f"steps frame: column {name!r} does not have {n} values")
        odd = set(map(type, values)) - _NUMBER_TYPES
        if odd:
            raise FrameError(f"steps frame: column {name!r} holds a {odd.pop().__name__}")
    hists = frame.get("hists", {})
    if not isinstance(hists, dict) or not all(
        isinstance(h, list) and set(map(type, h)) <= _NUMBER_TYPES for h in hists.values()
    ):
        raise FrameError("steps frame: 'hists' is not a map of number lists")


# ---- packed columns -------------------------------------------------------------------------------------------
# A steps frame's `steps`, `times` and float columns may travel as msgpack `bin`: little-endian int64 (steps)
# or float64 (the rest), 8 bytes a row. A viewer then reads a column with one np.frombuffer instead of building
# a Python float per value (the live view's limit). A row where the metric was not measured holds MISSING_BITS,
# a NaN payload no arithmetic produces; a measured NaN that happens to carry it is sent as the ordinary NaN.
MISSING_BITS = 0x7FF8_ACC0_0000_0001
_F8 = np.dtype("<f8")
_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")


class Floats:
    """A decoded packed column: float64 values, and which rows were not measured (None: every row was)."""

    __slots__ = ("values", "missing")

    def __init__(self, values: np.ndarray, missing: np.ndarray | None = None) -> None:
        self.values = values
        self.missing = missing

    def __len__(self) -> int:
        return len(self.values)

    def tolist(self) -> list[float | None]:
        """As a frame column of lists has it: floats, None where not measured."""
        out = self.values.tolist()
        if self.missing is not None:
            for i in np.flatnonzero(self.missing).tolist():
                out[i] = None
        return out


def pack_floats(values: Floats | list | np.ndarray) -> bytes:
    """A column (Floats, or a list of numbers and None) as packed bytes."""
    if isinstance(values, Floats):
        return _pack_array(np.asarray(values.values, dtype=_F8), values.missing)
    try:
        data = struct.pack(f"<{len(values)}d", *values)  # the fastest way from Python floats to bytes
    except struct.error:  # None (not measured) among them, or something that is no number
        return _pack_array(*floats_of_list(list(values)))
    if (np.frombuffer(data, dtype=_U8) == MISSING_BITS).any():
        return _pack_array(np.frombuffer(data, dtype=_F8), None)
    return data


def _pack_array(arr: np.ndarray, missing: np.ndarray | None) -> bytes:
    bits = arr.view(_U8)
    clash = bits == MISSING_BITS
    if missing is not None or clash.any():
        bits = bits.copy()
        bits[clash] = np.float64("nan").view(_U8)
        if missing is not None:
            bits[missing] = MISSING_BITS
    return bits.tobytes()


def floats_of_list(values: list) -> tuple[np.ndarray, np.ndarray | None]:
    """A list column (numbers, None) as float64 values and the rows not measured (None: every row was)."""
    # numpy reads None as NaN: tell the two apart at the NaNs only (few, but for sparse columns).
    arr = np.array(values, dtype=_F8)
    nan_at = np.flatnonzero(np.isnan(arr))
    if not len(nan_at):
        return arr, None
    none_at = [i for i in nan_at.tolist() if values[i] is None]
    if not none_at:
        return arr, None
    missing = np.zeros(len(arr), dtype=bool)
    missing[none_at] = True
    return arr, missing


def packable(values: Any) -> bool:
    """Whether a column is floats (packed), rather than ints or booleans (kept as a list, exactly)."""
    if isinstance(values, Floats):
        return True
    for v in values:
        if v is not None:
            if type(v) is float:
                return True  # a float column (an int among its values is packed as a float)
            break
    kinds = set(map(type, values))
    return float in kinds and kinds <= _NUMBER_TYPES


def pack_steps(frame: dict[str, Any]) -> dict[str, Any]:
    """A steps frame with `steps`, `times` and its float columns packed (a new map; the input is unchanged)."""
    out = dict(frame)
    steps = frame["steps"]
    out["steps"] = struct.pack(f"<{len(steps)}q", *steps)
    times = frame.get("times")
    if times is not None:
        out["times"] = struct.pack(f"<{len(times)}d", *times)
    out["cols"] = {name: pack_floats(vals) if packable(vals) else vals for name, vals in frame.get("cols", {}).items()}
    return out


def _unpack_floats(data: bytes) -> Floats:
    values = np.frombuffer(data, dtype=_F8)
    missing = values.view(_U8) == MISSING_BITS
    return Floats(values, missing if missing.any() else None)


def as_list(values: Any) -> list:
    """A steps frame's field as a list, however it was decoded (list, numpy array, Floats)."""
    if values is None:
        return []
    return values if isinstance(values, list) else values.tolist()
