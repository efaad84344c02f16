"""A run's machine figures in a few numbers: the median step split into waiting for data and the rest,
throughput, and memory peaks. The same summary for `accmon check --json` (streamed from frames) and for the
System tab (from the store's columns)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TIMED = ("step_time", "data_wait", "samples_per_s", "tokens_per_s")
PEAK_PREFIXES = ("cuda_allocated/", "cuda_reserved/", "cuda_max_allocated/")
# Values kept per timed metric for its median: every k-th, k doubling when full. Bounded memory and linear time
# on runs of any length; the median of an even thinning is the run's median within noise.
KEEP = 65536


class Thinned:
    __slots__ = ("every", "skip", "values")

    def __init__(self) -> None:
        self.every = 1
        self.skip = 0
        self.values: list[float] = []

    def extend(self, values: Iterable[Any]) -> None:
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                continue
            if self.skip:
                self.skip -= 1
                continue
            self.values.append(float(v))
            self.skip = self.every - 1
            if len(self.values) >= KEEP:
                del self.values[1::2]
                self.every *= 2


class SystemSummary:
    """Fed the columns of every steps frame of one rank (`add`); `result()` is the summary, or None when the
    run carried no timing or memory figures (an old recording, an import)."""

    def __init__(self) -> None:
        self.timed = {name: Thinned() for name in TIMED}
        self.peaks: dict[str, float] = {}

    def add(self, cols: Mapping[str, Any]) -> None:
        for name, values in cols.items():
            if name in self.timed:
                self.timed[name].extend(values)
            elif name == "rss" or name.startswith(PEAK_PREFIXES):
                finite = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
                if finite:
                    self.peaks[name] = max(self.peaks.get(name, -math.inf), max(finite))

    def result(self, facts: Mapping[str, Any]) -> dict[str, Any] | None:
        return describe({name: np.asarray(t.values) for name, t in self.timed.items()}, self.peaks, facts)


def describe(timed: Mapping[str, np.ndarray], peaks: Mapping[str, float], facts: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary from each timed metric's values and each memory metric's peak."""
    def median(name: str) -> float | None:
        v = timed.get(name)
        v = v[np.isfinite(v)] if v is not None else None
        return float(np.median(v)) if v is not None and len(v) else None

    out: dict[str, Any] = {
        "median_step_s": median("step_time"),
        "median_data_wait_s": median("data_wait"),
        "median_samples_per_s": median("samples_per_s"),
        "median_tokens_per_s": median("tokens_per_s"),
        "peak_rss_bytes": int(peaks["rss"]) if "rss" in peaks else None,
    }
    step, wait = out["median_step_s"], out["median_data_wait_s"]
    out["data_wait_share"] = round(min(wait / step, 1.0), 4) if step and wait is not None else None
    devices: dict[str, dict[str, Any]] = {}
    given = facts.get("devices")
    known: Mapping[str, Any] = given if isinstance(given, dict) else {}
    for name, peak in peaks.items():
        if "/" not in name:
            continue
        kind, index = name.split("/", 1)
        d = devices.setdefault(index, {})
        d[f"peak_{kind[len('cuda_'):]}_bytes"] = int(peak)
    for index, d in devices.items():
        info = known.get(index)
        if isinstance(info, dict):
            d["name"] = info.get("name") if isinstance(info.get("name"), str) else None
            total = info.get("total")
            d["total_bytes"] = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) else None
    out["devices"] = devices
    if all(v is None for k, v in out.items() if k != "devices") and not devices:
        return None
    return out


def nbytes(v: float | None) -> str:
    """3.2 GB, 512 MB, 80 GB: memory as a person reads it."""
    if v is None or not np.isfinite(v):
        return "–"
    for unit, div in (("TB", 1024.0**4), ("GB", 1024.0**3), ("MB", 1024.0**2), ("kB", 1024.0)):
        if abs(v) >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.0f} B"


def one_line(s: dict[str, Any]) -> str:
    """`a step 12 ms (67 % waiting for data), 1.23k samples/s, memory peak 1.2 GB, GPU 0 peak 30 GB of 80 GB`."""
    parts = []
    if s.get("median_step_s") is not None:
        wait = f" ({s['data_wait_share']:.0%} waiting for data)" if s.get("data_wait_share") is not None else ""
        parts.append(f"a step {s['median_step_s'] * 1000:.3g} ms{wait}")
    if s.get("median_samples_per_s") is not None:
        parts.append(f"{s['median_samples_per_s']:.4g} samples/s")
    if s.get("peak_rss_bytes") is not None:
        parts.append(f"memory peak {nbytes(s['peak_rss_bytes'])}")
    for index, d in sorted(s.get("devices", {}).items()):
        total = f" of {nbytes(d['total_bytes'])}" if d.get("total_bytes") else ""
        parts.append(f"GPU {index} peak {nbytes(d.get('peak_allocated_bytes'))}{total}")
    return ", ".join(parts)
