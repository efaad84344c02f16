"""The recent measured values of one metric, in step order, in a small numpy buffer."""

from __future__ import annotations

import math

import numpy as np

from .thresholds import SERIES_CAP


class Series:
    """(step, value) pairs of one metric, the newest `cap` kept; only measured values (no gaps).

    The buffer holds twice `cap` so appending is a slice copy, with one shift back every `cap` values:
    the data stay contiguous and ordered, and a view up to any step is one binary search.
    """

    __slots__ = ("cap", "steps", "vals", "n", "total", "newest", "memo_key", "memo")

    def __init__(self, cap: int = SERIES_CAP) -> None:
        self.cap = cap
        self.steps = np.empty(2 * cap, dtype=np.int64)
        self.vals = np.empty(2 * cap, dtype=np.float64)
        self.n = 0
        self.total = 0  # values ever appended
        self.newest = -1  # step of the newest value, as a Python int
        self.memo_key: tuple[int, int, int] | None = None  # (end, total, k) of the cached `recent` answer
        self.memo: tuple[float, int, int] | None = None

    def extend(self, steps: np.ndarray, vals: np.ndarray) -> None:
        k = len(vals)
        if k == 0:
            return
        self.total += k
        if k >= self.cap:
            steps, vals, k = steps[-self.cap:], vals[-self.cap:], self.cap
            self.n = 0
        elif self.n + k > 2 * self.cap:
            keep = self.cap - k
            self.steps[:keep] = self.steps[self.n - keep:self.n]
            self.vals[:keep] = self.vals[self.n - keep:self.n]
            self.n = keep
        self.steps[self.n:self.n + k] = steps
        self.vals[self.n:self.n + k] = vals
        self.n += k
        self.newest = int(self.steps[self.n - 1])

    def end(self, step: int) -> int:
        """Index one past the last measurement at or before `step`."""
        if self.newest <= step:
            return self.n
        return int(np.searchsorted(self.steps[:self.n], step, side="right"))

    def recent(self, step: int, k: int) -> tuple[float, int, int] | None:
        """(median of the last `k` finite values at or before `step`, step of the newest, how many), or None.

        Cached until the series changes: sparse metrics (per-layer statistics) are asked about far more often
        than they are measured.
        """
        end = self.end(step)
        key = (end, self.total, k)
        if key == self.memo_key:
            return self.memo
        vals = [v for v in self.vals[max(0, end - k):end].tolist() if math.isfinite(v)]
        out = (median(vals), int(self.steps[end - 1]), len(vals)) if vals else None
        self.memo_key, self.memo = key, out
        return out

    def upto(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values measured at or before `step` (views, oldest first)."""
        end = self.end(step)
        return self.steps[:end], self.vals[:end]

    def last(self, step: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `k` measurements at or before `step`."""
        s, v = self.upto(step)
        return s[-k:], v[-k:]

    def within(self, step: int, span: int) -> np.ndarray:
        """Values measured in the `span` steps ending at `step`."""
        s, v = self.upto(step)
        if not len(s):
            return v
        return v[int(np.searchsorted(s, step - span, side="right")):]


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
