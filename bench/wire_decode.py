"""What decoding a frame costs: `wire.decode` against the bare unpacking it is built on (issue 17 item 9).

    .venv/bin/python bench/wire_decode.py
    PYTHONPATH=/path/to/other/tree/.pkg .venv/bin/python bench/wire_decode.py    # another tree's wire.decode

Per frame, the median of repeated rounds, in µs, for frames as the probe sends them:
- `unpack`: msgspec's msgpack decoder into plain maps, with no checks at all: the floor;
- `decode`: `wire.decode(arrays=True)`, unpacking and every check, packed columns as numpy arrays (how the viewer
  ingests them);
- `as lists`: `wire.decode()`, packed columns turned into lists (how `check` and the rules read them).
The two trees' figures are in BENCHMARKS.md ("Typed frames").
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import msgspec
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from accmon.probe import wire  # noqa: E402

STEPS, FLOAT_COLS, INT_COLS = 256, 48, 4  # one frame of a torch probe's ~0.5 s flush: steps x columns


def steps_frame(packed: bool, missing: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {f"grad_norm/layer{i}": rng.random(STEPS).tolist() for i in range(FLOAT_COLS)}
    if missing:  # sampled tiers: most columns measured every few steps only
        cols = {k: [x if i % 4 == 0 else None for i, x in enumerate(v)] for k, v in cols.items()}
    cols.update({f"count{i}": list(range(STEPS)) for i in range(INT_COLS)})
    frame = wire.envelope("steps", "0101000000-0c0e11", 0, 7, STEPS - 1, steps=list(range(STEPS)),
                          times=[float(i) for i in range(STEPS)], cols=cols)
    return wire.encode(wire.pack_steps(frame) if packed else frame)


def facts_frame() -> bytes:
    layers = {f"layer{i}": {"type": "Linear", "params": 4096 * i, "shape": [64, 64], "act": "relu"} for i in range(60)}
    return wire.encode(wire.envelope("facts", "0101000000-0c0e11", 0, 2, -1, facts={"model": {"layers": layers},
                                                                                    "optimizer": {"lr": 1e-3}}))


def alert_frame() -> bytes:
    alert = {"id": "exploding_gradients", "severity": "critical", "step": 812, "message": "the gradient norm grew "
             "1000x in 40 steps", "evidence": {"grad_norm": [0.5, 3.0, 410.0], "steps": [700, 780, 812]},
             "fix": "lower the learning rate", "state": "active", "last_step": 812, "cleared_step": None, "rank": 0}
    return wire.encode(wire.envelope("alert", "0101000000-0c0e11", 0, 40, 812, alert=alert))


def per_frame_us(fn: Callable[[bytes], object], data: bytes, rounds: int, n: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn(data)
        times.append((time.perf_counter_ns() - t) / n / 1000)
    return statistics.median(times)


def main() -> None:
    unpack = msgspec.msgpack.Decoder().decode

    def decode(data: bytes) -> object:
        return wire.decode(data, arrays=True)

    cases = [("steps, packed", steps_frame(True)), ("steps, sparse", steps_frame(True, missing=True)),
             ("steps, as lists", steps_frame(False)), ("facts", facts_frame()), ("alert", alert_frame())]
    print(f"wire: {wire.__file__}; msgspec {msgspec.__version__}, python {sys.version.split()[0]}; "
          f"steps frames: {STEPS} steps x {FLOAT_COLS} float + {INT_COLS} int columns")
    print(f"{'frame':<17}{'bytes':>9}{'unpack':>9}{'decode':>9}{'as lists':>10}")
    for name, data in cases:
        n = max(20, 2_000_000 // len(data))
        row = [per_frame_us(fn, data, 9, n) for fn in (unpack, decode, wire.decode)]
        print(f"{name:<17}{len(data):>9,}" + "".join(f"{x:>{w}.1f}" for x, w in zip(row, (9, 9, 10), strict=True)))


if __name__ == "__main__":
    main()
