"""Numbers as a person reads them in a narrow column."""

from __future__ import annotations

import math


def num(v: float | None, width: int = 6) -> str:
    """A value in at most about `width` characters: 0.9123, 12.3k, 4.1e-07, NaN, +Inf."""
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e4:
        for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if a >= div:
                s = f"{v / div:.3g}{unit}"
                return s if a < 1e15 else f"{v:.2g}"
    if a < 1e-2:
        return f"{v:.1e}".replace("e-0", "e-")
    digits = max(1, width - 2)
    return f"{v:.{digits}g}"


def steps(v: float | int | None) -> str:
    """A step number for axes and headers: 1,234 or 12.3k or 4.56M."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = int(v)
    if abs(v) >= 10**12:
        return f"{v:.3g}"
    if abs(v) < 10_000:
        return f"{v:,}"
    if abs(v) < 1_000_000:
        return f"{v / 1e3:.4g}k"
    return f"{v / 1e6:.4g}M"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60:d}:{s % 60:02d}"
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    """About n round tick values covering [lo, hi] (1, 2, 2.5, 5 × 10^k steps), at least two when possible."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or n < 2:
        return [lo]
    raw = (hi - lo) / (n - 1)
    # A float power: `10 ** 32` is a Python int, and ticks of a diverging loss (~5e32) became ints that numpy
    # can only hold in an object array (the chart crashed on them).
    mag = 10.0 ** math.floor(math.log10(raw))
    candidates = [m * mag for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10)]
    i = next(k for k, c in enumerate(candidates) if c >= raw)
    out: list[float] = []
    while i >= 0:
        step = candidates[i]
        first = math.ceil(lo / step - 1e-9) * step
        out = []
        v = first
        while v <= hi + step * 1e-9:
            out.append(0.0 if abs(v) < step * 1e-9 else round(v, 12))
            v += step
        if len(out) >= 2:
            break
        i -= 1  # a range that holds one round number of this size: take a smaller size
    return out
