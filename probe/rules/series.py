"""The recent measured values of one metric, in step order, in bounded Python lists.

Appends come every frame for every metric and are tiny (a handful of sampled values); reads come at
evaluation points for the metrics a rule looks at. Lists make the first nearly free, and a read turns the
few values it needs into a numpy array.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from .thresholds import SERIES_CAP


class Series:
    """(step, value) pairs of one metric, the newest `cap` kept (up to twice that between trims); only
    measured values, no gaps."""

    __slots__ = ("cap", "steps", "vals", "total", "newest", "memo_key", "memo")

    def __init__(self, cap: int = SERIES_CAP) -> None:
        self.cap = cap
        self.steps: list[int] = []
        self.vals: list[float] = []
        self.total = 0  # values ever appended
        self.newest = -1  # step of the newest value
        self.memo_key: tuple[int, int, int] | None = None  # (end, total, k) of the cached `recent` answer
        self.memo: tuple[float, int, int] | None = None

    @property
    def n(self) -> int:
        return len(self.vals)

    def extend(self, steps: list[int], vals: list[float]) -> None:
        if not vals:
            return
        self.total += len(vals)
        self.steps += steps
        self.vals += vals
        self.newest = self.steps[-1]
        if len(self.vals) > 2 * self.cap:
            del self.steps[:-self.cap]
            del self.vals[:-self.cap]

    def end(self, step: int) -> int:
        """Index one past the last measurement at or before `step`."""
        if self.newest <= step:
            return len(self.vals)
        return bisect_right(self.steps, step)

    def recent(self, step: int, k: int) -> tuple[float, int, int] | None:
        """(median of the last `k` finite values at or before `step`, step of the newest, how many), or None.

        Cached until the series changes: sparse metrics (per-layer statistics) are asked about far more often
        than they are measured.
        """
        end = self.end(step)
        key = (end, self.total, k)
        if key == self.memo_key:
            return self.memo
        vals = [v for v in self.vals[max(0, end - k):end] if math.isfinite(v)]
        out = (median(vals), self.steps[end - 1], len(vals)) if vals else None
        self.memo_key, self.memo = key, out
        return out

    def upto(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values measured at or before `step` (oldest first)."""
        end = self.end(step)
        return np.array(self.steps[:end], dtype=np.int64), np.array(self.vals[:end], dtype=np.float64)

    def window(self, step: int, k: int) -> tuple[int, list[float]]:
        """(step of the oldest, values) of the last `k` measurements at or before `step`, as a plain list."""
        end = self.end(step)
        start = max(0, end - k)
        return (self.steps[start] if end > start else -1), self.vals[start:end]

    def ends(self, step: int, k: int) -> tuple[float | None, float | None]:
        """The oldest and newest of the last `k` measurements at or before `step`."""
        end = self.end(step)
        start = max(0, end - k)
        return (self.vals[start], self.vals[end - 1]) if end - start >= 2 else (None, None)

    def last(self, step: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `k` measurements at or before `step`."""
        end = self.end(step)
        start = max(0, end - k)
        return np.array(self.steps[start:end], dtype=np.int64), np.array(self.vals[start:end], dtype=np.float64)


def array_median(a: np.ndarray) -> float:
    """Median of a numpy array by partition: np.median's overhead is several times the work for short arrays."""
    n = len(a)
    m = n // 2
    if n % 2:
        return float(np.partition(a, m)[m])
    p = np.partition(a, (m - 1, m))
    return float((p[m - 1] + p[m]) / 2)


def median(values: list[float]) -> float:
    """Median of a short list, in plain Python: for a handful of values numpy's median costs ten times more."""
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2
