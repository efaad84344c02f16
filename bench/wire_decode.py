"""Issue 17 item 9: would typed frames (msgspec Structs) decode faster than today's msgpack + `wire.decode` checks?

    .venv/bin/pip install --target /tmp/msgspec_pkg msgspec     # not a dependency of accmon
    PYTHONPATH=/tmp/msgspec_pkg .venv/bin/python bench/wire_decode.py

Per frame, the median of repeated rounds, in µs, for frames as the probe sends them:
- `unpackb`: msgpack.unpackb alone, as wire.decode calls it (no checks);
- `wire.decode`: today's path, unpack and every check (arrays=True, as the viewer reads);
- `msgspec any`: msgspec's msgpack decoder into plain maps (a drop-in for unpackb; the checks would remain);
- `msgspec typed`: a steps frame decoded into a Struct whose types do the checks, then its packed columns read
  as arrays as wire.decode does. Only steps frames have a fixed shape: meta, facts and alerts carry the user's
  own keys, which a Struct would drop, so they stay maps whichever library decodes them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import msgpack
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from accmon.probe import wire  # noqa: E402

try:
    import msgspec
except ImportError:
    sys.exit("msgspec is not installed: see this script's docstring")

STEPS, FLOAT_COLS, INT_COLS = 256, 48, 4  # one frame of a torch probe's ~0.5 s flush: steps x columns


class Steps(msgspec.Struct):
    """A steps frame as a type: the envelope, then columns packed (bytes) or as lists."""

    v: int
    kind: str
    run: str
    rank: int
    seq: int
    step: int
    t: float
    steps: bytes | list[int]
    times: bytes | list[float | int | None] | None = None
    cols: dict[str, bytes | list[float | int | bool | None]] = {}
    hists: dict[str, list[float | int | None]] = {}


def steps_frame(packed: bool) -> bytes:
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {f"grad_norm/layer{i}": rng.random(STEPS).tolist() for i in range(FLOAT_COLS)}
    cols.update({f"count{i}": list(range(STEPS)) for i in range(INT_COLS)})
    frame = wire.envelope("steps", "0101000000-0c0e11", 0, 7, STEPS - 1, steps=list(range(STEPS)),
                          times=[float(i) for i in range(STEPS)], cols=cols)
    return wire.encode(wire.pack_steps(frame) if packed else frame)


def facts_frame() -> bytes:
    layers = {f"layer{i}": {"type": "Linear", "params": 4096 * i, "shape": [64, 64], "act": "relu"} for i in range(60)}
    return wire.encode(wire.envelope("facts", "0101000000-0c0e11", 0, 2, -1, facts={"model": {"layers": layers},
                                                                                    "optimizer": {"lr": 1e-3}}))


def typed_steps(decoder: msgspec.msgpack.Decoder) -> Callable[[bytes], object]:
    f8 = np.dtype("<f8")

    def decode(data: bytes) -> object:
        frame = decoder.decode(data)
        if isinstance(frame.steps, bytes):
            np.frombuffer(frame.steps, dtype="<i8")
        if isinstance(frame.times, bytes):
            np.frombuffer(frame.times, dtype=f8)
        for v in frame.cols.values():
            if isinstance(v, bytes):
                values = np.frombuffer(v, dtype=f8)
                _ = values.view("<u8") == wire.MISSING_BITS  # as wire's Floats: which rows were not measured
        return frame

    return decode


def per_frame_us(fn: Callable[[bytes], object], data: bytes, rounds: int, n: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn(data)
        times.append((time.perf_counter_ns() - t) / n / 1000)
    return statistics.median(times)


def main() -> None:
    untyped = msgspec.msgpack.Decoder()
    typed = typed_steps(msgspec.msgpack.Decoder(Steps))

    def unpackb(data: bytes) -> object:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=1)

    def today(data: bytes) -> object:
        return wire.decode(data, arrays=True)

    cases = [("steps, packed", steps_frame(True), True), ("steps, as lists", steps_frame(False), True),
             ("facts", facts_frame(), False)]
    print(f"msgspec {msgspec.__version__}, msgpack {msgpack.version}, python {sys.version.split()[0]}; "
          f"steps frames: {STEPS} steps x {FLOAT_COLS} float + {INT_COLS} int columns")
    print(f"{'frame':<17}{'bytes':>9}{'unpackb':>10}{'wire.decode':>13}{'msgspec any':>13}{'msgspec typed':>15}"
          f"{'typed / today':>15}")
    for name, data, has_type in cases:
        n = max(20, 2_000_000 // len(data))
        row = [per_frame_us(fn, data, 9, n) for fn in (unpackb, today, untyped.decode)]
        t_typed = per_frame_us(typed, data, 9, n) if has_type else None
        typed_s = f"{t_typed:.1f}" if t_typed is not None else "(a map)"
        ratio = f"{t_typed / row[1]:.2f}" if t_typed is not None else "-"
        print(f"{name:<17}{len(data):>9,}{row[0]:>10.1f}{row[1]:>13.1f}{row[2]:>13.1f}{typed_s:>15}{ratio:>15}")


if __name__ == "__main__":
    main()
