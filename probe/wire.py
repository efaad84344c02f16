"""Wire frames: versioned msgpack maps, decoded with limits (docs/frames.md).

The same bytes travel over ZeroMQ and into recordings. msgpack keeps NaN and ±Inf exactly, which
JSON encoders do not, and it never executes anything it reads (no pickle anywhere). msgspec encodes them and
decodes them against `Frame`, the frames' keys and types: the type checks run in C while the bytes are read,
and frames stay plain maps for their readers.
"""

from __future__ import annotations

import datetime
import struct
import threading
import time
from typing import Any, TypedDict

import msgspec
import numpy as np

SCHEMA_VERSION = 1
KINDS = frozenset({"meta", "facts", "steps", "alert", "end", "exit", "hb"})

# A frame holds at most a few thousand steps of a few hundred series; 64 MiB is far above any
# real frame and bounds what a hostile peer can make a reader allocate.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Real frames nest 4 deep (frame → facts → model → layers → layer); 16 leaves room for user facts.
MAX_DEPTH = 16

_Numbers = list[int | float | None]  # a column as a list: None where the metric was not measured; a bool is no number


class _Envelope(TypedDict):
    """Every frame's keys."""

    v: Any  # Any: a newer version is refused with its own message, not as a type error
    kind: Any
    run: str
    rank: int
    seq: int
    step: int


class Frame(_Envelope, total=False):
    """Every key a frame may carry, with its type (docs/frames.md). A key not listed here is dropped while
    decoding (frames.md: unknown fields are ignored). Bodies that their readers check for themselves (facts,
    alerts, meta, the end) are Any: their depth and map keys are checked after decoding."""

    t: float
    # meta
    name: Any
    host: Any
    pid: Any
    cmd: Any
    started: Any
    world_size: Any
    probe: Any
    record: Any
    source: Any
    # facts
    facts: Any
    # steps: `steps`, `times` and float columns packed (bytes, see pack_steps) or as lists
    steps: bytes | list[int]
    times: bytes | _Numbers | None
    cols: dict[str, bytes | _Numbers]
    hists: dict[str, _Numbers]
    # alert
    alert: Any
    # end
    status: Any
    error: Any
    total_steps: Any
    dropped_steps: Any
    stopped: Any
    stop_refused: Any
    # exit
    exit_code: Any
    signal: Any
    last_heard: Any
    # hb
    dropped: Any


class FrameError(ValueError):
    """A frame that cannot be used: not msgpack, too big, too deep, or not of a known schema."""


def _plain_scalar(obj: Any) -> Any:
    """What msgspec does not encode by itself: numpy scalars (np.float64 is a float to msgpack users)."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode a {type(obj).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_plain_scalar)
# A buffer per thread, reused, as msgpack's Packer keeps one. `Encoder.encode` builds every message in a new
# buffer, and a steps frame of 2,000 rows is fresh memory each time: the probe's batched throughput was 15 % lower
# (bench/transport.py), for an encode that alone takes the same time.
_buffers = threading.local()


def encode(frame: Any) -> bytes:
    """Encode one frame (or a control request or reply). The caller owns the envelope keys (see `envelope`)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray()
    _encoder.encode_into(frame, buf)  # leaves buf as long as the message: it holds no more than the last one
    return bytes(buf)


def envelope(kind: str, run: str, rank: int, seq: int, step: int, **body: Any) -> dict[str, Any]:
    """A frame map with the envelope every frame carries."""
    frame = {"v": SCHEMA_VERSION, "kind": kind, "run": run, "rank": rank, "seq": seq, "step": step, "t": time.time()}
    frame.update(body)
    return frame


def _refuse_ext(code: int, data: memoryview) -> None:
    raise FrameError(f"msgpack extension type {code} is not part of the accmon schema")


_frame_decoder = msgspec.msgpack.Decoder(Frame, ext_hook=_refuse_ext)
_map_decoder = msgspec.msgpack.Decoder(dict[str, Any], ext_hook=_refuse_ext)
_any_decoder = msgspec.msgpack.Decoder(ext_hook=_refuse_ext)
# Typed by `Frame`, checked by msgspec: not walked again.
_TYPED_KEYS = frozenset({"steps", "times", "cols", "hists"})


def decode(data: bytes | bytearray | memoryview, *, arrays: bool = False) -> dict[str, Any]:
    """Decode and validate one frame, or raise FrameError saying what is wrong with it.

    A steps frame's packed fields (see `pack_steps`) come back as lists, as if they had been sent as lists;
    with `arrays`, as numpy arrays (`steps`, `times`) and `Floats` (columns), read with no copy."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        frame: dict[str, Any] = _frame_decoder.decode(data)  # type: ignore[assignment]  # a TypedDict is a dict
    except FrameError:
        raise
    except msgspec.ValidationError as exc:
        raise FrameError(_why_not_a_frame(data, exc)) from None
    except Exception as exc:  # malformed, truncated, too deep for the decoder's recursion limit
        raise FrameError(f"not a msgpack frame: {exc.__class__.__name__}: {exc}") from None
    unknown = _unknown_schema(frame)
    if unknown:
        raise FrameError(unknown)
    _check_nested(frame)
    if frame["kind"] == "steps":
        _check_steps(frame, arrays)
    return frame


def decode_message(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A control request or reply (docs/frames.md, "Requests"): a map, nesting and keys checked as a frame's."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"message of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        message: dict[str, Any] = _map_decoder.decode(data)
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(f"not a msgpack map: {exc.__class__.__name__}: {exc}") from None
    _check_nested(message)
    return message


def _why_not_a_frame(data: bytes | bytearray | memoryview, exc: msgspec.ValidationError) -> str:
    """A frame that failed its types: say why as a reader needs it (not a map, a newer version, which field)."""
    try:
        loose = _any_decoder.decode(data)
    except FrameError as err:  # an extension value
        return str(err)
    except Exception:
        loose = None
    if not isinstance(loose, dict):
        return f"frame is a {type(loose).__name__}, not a map" if loose is not None else f"not a frame: {exc}"
    if not set(map(type, loose)) <= _KEY_TYPES:
        return "not a frame: a map key that is not a string"
    # msgspec's message names the field, e.g. "Expected `int`, got `str` - at `$.rank`".
    return _unknown_schema(loose) or f"{loose['kind']} frame: {exc}"


def _unknown_schema(frame: dict[Any, Any]) -> str | None:
    """Why a map's version or kind is not one this accmon reads, or None."""
    v = frame.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:  # `true == 1` in Python: a bool is no version
        return f"unknown frame schema version {v!r} (this accmon reads version {SCHEMA_VERSION}; upgrade accmon?)"
    kind = frame.get("kind")
    if kind not in KINDS:
        return f"unknown frame kind {kind!r}"
    return None


_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_KEY_TYPES = {str}


def _check_nested(obj: dict[str, Any]) -> None:
    """The untyped parts: at most MAX_DEPTH levels (the map itself is 1), string keys, no extension values.
    msgpack timestamps (never produced by accmon) become plain float seconds, as they always have."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FrameError(f"frame nests deeper than {MAX_DEPTH} levels")
        pairs: Any
        if type(item) is dict:
            if depth > 1 and not set(map(type, item)) <= _KEY_TYPES:
                raise FrameError("a map key that is not a string")
            pairs = item.items()
        else:
            pairs = enumerate(item)
        for key, child in pairs:
            kind = type(child)
            if kind is dict or kind is list:
                if depth > 1 or key not in _TYPED_KEYS:
                    stack.append((child, depth + 1))
            elif kind is datetime.datetime:
                item[key] = child.timestamp()
            elif kind not in _LEAF_TYPES:
                raise FrameError(f"a {kind.__name__} is not part of the accmon schema")


def _check_steps(frame: dict[str, Any], arrays: bool) -> None:
    """The lengths of a steps frame's fields (their types were checked while decoding), packed fields read."""
    steps = frame.get("steps")
    if steps is None:
        raise FrameError("steps frame has no valid 'steps' list")
    if isinstance(steps, bytes):
        if len(steps) % 8:
            raise FrameError("steps frame: packed 'steps' is not a whole number of int64 values")
        packed = np.frombuffer(steps, dtype=_I8)
        frame["steps"] = steps = packed if arrays else packed.tolist()
    n = len(steps)
    times = frame.get("times")
    if isinstance(times, bytes):
        if len(times) != 8 * n:
            raise FrameError("steps frame: 'times' does not match 'steps'")
        packed = np.frombuffer(times, dtype=_F8)
        frame["times"] = packed if arrays else packed.tolist()
    elif times is not None and len(times) != n:
        raise FrameError("steps frame: 'times' does not match 'steps'")
    cols = frame.setdefault("cols", {})  # readers may count on it: a frame of steps with no values has {}
    for name, values in cols.items():
        if isinstance(values, bytes):
            if len(values) != 8 * n:
                raise FrameError(f"steps frame: column {name!r} does not have {n} values")
            col = _unpack_floats(values)
            cols[name] = col if arrays else col.tolist()
        elif len(values) != n:
            raise FrameError(f"steps frame: column {name!r} does not have {n} values")


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


_NUMBER_TYPES = {int, float, type(None)}


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
