"""One rank's data: its step axis, its series (columns), its histograms and its own clock, filled from `steps` frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from accmon.probe import wire

from .columns import MISSING_BITS, Column, StepAxis, _Grow


def _to_float32(values: list | wire.Floats) -> tuple[np.ndarray, np.ndarray | None, float | None, float | None, int]:
    """A frame column (floats, ints, None; or a packed column) as float32 with MISSING where not measured,
    without a Python loop per value.

    Returns (values, measured mask or None when every row is measured, newest measured value and newest
    finite value, exact, and the number of measured values that are NaN or ±Inf).
    """
    arr, missing = (values.values, values.missing) if isinstance(values, wire.Floats) else wire.floats_of_list(values)
    measured = None if missing is None else ~missing
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if measured is not None:
        out.view(np.uint32)[~measured] = MISSING_BITS
        idx = np.flatnonzero(measured)
        last = float(arr[idx[-1]]) if len(idx) else None
        finite &= measured
        nonfinite = len(idx) - int(finite.sum())
    else:
        last = float(arr[-1]) if len(arr) else None
        nonfinite = len(arr) - int(finite.sum())
    last_finite = last
    if nonfinite or measured is not None:
        fin = np.flatnonzero(finite)
        last_finite = float(arr[fin[-1]]) if len(fin) else None
    return out, measured, last, last_finite, nonfinite


# Series one rank keeps. A real run logs tens to a few thousand (per-layer statistics of a large model); 200,000
# columns in a 3.5 MB file held 1.47 GB (issue 16): past this, new names are counted and left out.
MAX_SERIES = 20_000
MAX_RANKS = 4096  # ranks one store keeps (a file naming 20,000 held a RankData each)


class RankData:
    """Everything received from one rank: its row axis and its series."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.axis = StepAxis()
        self.columns: dict[str, Column] = {}
        self.version = 0  # bumps on every change: widgets redraw only when it moved
        self.hists_last: dict[str, list[float]] = {}
        self.hists_total: dict[str, np.ndarray] = {}
        self.out_of_order = 0  # rows dropped because their step went backwards
        self.series_left_out = 0  # columns past MAX_SERIES, not kept
        # One (wall time, step) pair per steps frame: steps/s, elapsed time, and replay at the run's own pace.
        self.time_t = _Grow(np.float64)
        self.time_step = _Grow(np.int64)
        self.first_t: float | None = None
        self.last_t: float | None = None

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.columns if n.startswith(prefix)]

    def add_steps(self, frame: dict[str, Any]) -> int:
        """Ingest one `steps` frame; return the number of new rows."""
        steps = frame["steps"]
        if not len(steps):
            return 0
        cols: dict[str, list | wire.Floats] = frame.get("cols") or {}
        sarr = np.asarray(steps, dtype=np.int64)
        order = None
        if len(sarr) > 1 and (np.diff(sarr) < 0).any():
            order = np.argsort(sarr, kind="stable")
            sarr = sarr[order]
        # Convert every column before changing anything: a bad column leaves no half-applied frame behind.
        converted: list[tuple] = []
        for name, values in cols.items():
            if name not in self.columns and len(self.columns) + len(converted) >= MAX_SERIES:
                self.series_left_out += 1  # a file or peer naming more series than any run has
                continue
            if not isinstance(name, str) or not isinstance(values, (list, wire.Floats)) or len(values) != len(steps):
                raise ValueError(f"column {name!r} does not hold one value per step")
            converted.append((name, *_to_float32(values)))
        last = self.axis.last
        start = 0
        if last is not None and sarr[0] < last:
            start = int(np.searchsorted(sarr, last, side="left"))
            self.out_of_order += start
        merge = last is not None and start < len(sarr) and sarr[start] == last
        new_from = start + (1 if merge else 0)
        new = len(sarr) - new_from
        if new == 0 and not merge:
            return 0
        for name, vals, measured, last_value, last_finite, nonfinite in converted:
            if order is not None:
                vals = vals[order]
                measured = measured[order] if measured is not None else None
            col = self.columns.get(name)
            if col is None:
                if measured is not None and not measured[start:].any():
                    continue  # never measured yet: no column until it is
                col = self.columns[name] = Column(name)
                col.append_missing(self.axis.n)
            if merge and (measured is None or measured[start]):
                col.set_last(vals[start])
            col.append(vals[new_from:])
            if last_value is not None:
                col.last_value = last_value
                col.measured += int(measured[new_from:].sum()) if measured is not None else new
                col.nonfinite += nonfinite
                if last_finite is not None:
                    col.last_finite = last_finite
        for col in self.columns.values():
            if col.n < self.axis.n + new:
                col.append_missing(self.axis.n + new - col.n)
        self.axis.append(sarr[new_from:])
        hists = frame.get("hists")
        if isinstance(hists, dict):
            for name, counts in hists.items():
                if isinstance(name, str) and isinstance(counts, list):
                    self.hists_last[name] = counts
                    arr = np.nan_to_num(np.array(counts, dtype=np.float64))
                    tot = self.hists_total.get(name)
                    if tot is None or len(tot) < len(arr):
                        grown = np.zeros(len(arr))
                        if tot is not None:
                            grown[: len(tot)] = tot
                        tot = grown
                    tot[: len(arr)] += arr
                    self.hists_total[name] = tot
        times = frame.get("times")
        t_first = t_last = frame.get("t")
        if isinstance(times, np.ndarray) and len(times):
            t_first, t_last = float(times[0]), float(times[-1])
        elif isinstance(times, list) and times and isinstance(times[0], (int, float)) and isinstance(times[-1], (int, float)):
            t_first, t_last = times[0], times[-1]
        if isinstance(t_last, (int, float)) and math.isfinite(t_last) and new:
            t_first = t_first if isinstance(t_first, (int, float)) and math.isfinite(t_first) else t_last
            if self.first_t is None:
                self.first_t = float(t_first)
            self.last_t = float(t_last)
            # First and last step of each frame: the run's pace, interpolated in between.
            s0, s1 = int(sarr[new_from]), int(sarr[-1])
            prev = self.time_t.view()[-1] if self.time_t.n else -math.inf
            self.time_t.extend(np.array([max(float(t_first), prev), max(float(t_last), float(t_first), prev)]))
            self.time_step.extend(np.array([s0, s1], dtype=np.int64))
        self.version += 1
        return new

    def latest(self, name: str) -> float | None:
        col = self.columns.get(name)
        return None if col is None else col.last_value

    def steps_per_s(self, window_s: float = 10.0) -> float | None:
        """Training speed over the newest `window_s` seconds of the run's own clock."""
        n = self.time_t.n
        if n < 2:
            return None
        t = self.time_t.view()
        s = self.time_step.view()
        i = int(np.searchsorted(t, t[-1] - window_s, side="left"))
        i = min(i, n - 2)
        dt = t[-1] - t[i]
        return (s[-1] - s[i]) / dt if dt > 0 else None

    def step_at_time(self, t: float) -> float | None:
        """The step the run had reached at wall time t (its own clock), interpolated: replay at the run's pace."""
        if self.time_t.n == 0:
            return None
        return float(np.interp(t, self.time_t.view(), self.time_step.view()))

    def time_at_step(self, step: float) -> float | None:
        if self.time_t.n == 0:
            return None
        return float(np.interp(step, self.time_step.view(), self.time_t.view()))
