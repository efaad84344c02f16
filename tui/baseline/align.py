"""Which baseline step stands beside a step of this run: by step, by epoch, or by samples seen (the charts'
overlay and the header)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..store import RankData, is_missing
from .load import Baseline

ALIGNS = ("step", "epoch", "samples")


class Progress:
    """A run's progress, in epochs or in samples seen, at anchor steps: kept up to date incrementally (each
    `update` reads only the rows added since the last), so a live run of ten million steps costs per tick what
    its new rows cost. Epochs: an anchor at the first step of each epoch. Samples: each step's batch is
    samples_per_s × step_time, else the loader's batch size (facts), else the last batch known; an anchor every
    THIN rows and at the newest row."""

    THIN = 64

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows = 0
        self.xs: list[float] = []
        self.us: list[float] = []
        self._epoch: float | None = None
        self._total = 0.0
        self._prev_step: float | None = None
        self._batch: float | None = None  # the last batch size known
        self._tail: tuple[float, float] | None = None

    def update(self, data: RankData, facts: dict[str, Any]) -> None:
        n = data.axis.n
        if n <= self.rows:
            return
        r0, self.rows = self.rows, n
        steps = data.axis.steps_at(np.arange(r0, n)).astype(np.float64)
        if self.kind == "epoch":
            col = data.columns.get("epoch")
            if col is None:
                return
            v = col.values(r0, n)
            ok = ~is_missing(v) & np.isfinite(v)
            for st, e in zip(steps[ok].tolist(), v[ok].astype(np.float64).tolist()):
                if e != self._epoch:
                    self.xs.append(st)
                    self.us.append(e)
                    self._epoch = e
            return
        batch = np.full(n - r0, np.nan)
        rate, dt = data.columns.get("samples_per_s"), data.columns.get("step_time")
        if rate is not None and dt is not None:
            rv, tv = rate.values(r0, n), dt.values(r0, n)
            with np.errstate(invalid="ignore", over="ignore"):
                b = np.where(is_missing(rv) | is_missing(tv), np.nan, np.rint(rv.astype(np.float64) * tv))
            batch = np.where(np.isfinite(b) & (b > 0), b, np.nan)
        size = facts.get("batch_size")
        if isinstance(size, (int, float)) and not isinstance(size, bool) and math.isfinite(size) and size > 0:
            batch = np.where(np.isnan(batch), float(size), batch)
        known = np.flatnonzero(~np.isnan(batch))
        if not len(known) and self._batch is None:
            return  # nothing says how many samples a step takes (yet)
        # Carry the last known batch forward over the rows that do not say theirs.
        fill = np.full(len(batch), self._batch if self._batch is not None else batch[known[0]])
        idx = np.maximum.accumulate(np.where(~np.isnan(batch), np.arange(len(batch)), -1))
        batch = np.where(idx >= 0, batch[np.maximum(idx, 0)], fill)
        self._batch = float(batch[-1])
        # A run logged every k-th step saw k batches between two rows.
        prev = self._prev_step if self._prev_step is not None else steps[0] - 1
        gaps = np.diff(np.concatenate([[prev], steps])).clip(1, None)
        cum = self._total + np.cumsum(batch * gaps)
        keep = np.flatnonzero((np.arange(r0, n) % self.THIN) == 0)
        self.xs += steps[keep].tolist()
        self.us += cum[keep].tolist()
        self._total, self._prev_step = float(cum[-1]), float(steps[-1])
        self._tail = (float(steps[-1]), float(cum[-1]))

    def anchors(self, last_step: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, progress), increasing; None when the run says nothing of it."""
        if not self.xs:
            return None
        xs, us = list(self.xs), list(self.us)
        if self.kind == "epoch":
            # The current epoch ends where an epoch as long as the previous one would (one past the last step
            # when it is the only one).
            if len(xs) >= 2:
                length = (xs[-1] - xs[-2]) / max(us[-1] - us[-2], 1e-9)
            else:
                length = max(float(last_step if last_step is not None else xs[-1]) - xs[-1] + 1, 1.0)
            xs.append(xs[-1] + length)
            us.append(us[-1] + 1)
        elif self._tail is not None and self._tail[0] > xs[-1]:
            xs.append(self._tail[0])
            us.append(self._tail[1])
        x, u = np.array(xs), np.array(us)
        ok = np.concatenate([[True], (np.diff(x) > 0) & (np.diff(u) > 0)])  # strictly increasing, for interp
        return x[ok], u[ok]


def _interp(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """np.interp, extended linearly beyond both ends (a run further on than its baseline)."""
    if len(xs) == 1:
        return np.full(len(x), ys[0]) + (x - xs[0])
    y = np.interp(x, xs, ys)
    lo, hi = x < xs[0], x > xs[-1]
    if lo.any():
        y[lo] = ys[0] + (x[lo] - xs[0]) * (ys[1] - ys[0]) / max(xs[1] - xs[0], 1e-12)
    if hi.any():
        y[hi] = ys[-1] + (x[hi] - xs[-1]) * (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
    return y


class Aligner:
    """Which baseline step stands beside a step of this run: the same step, the same point of the same epoch,
    or the same number of samples seen. Falls back to steps (and says so) when a run lacks what it needs."""

    def __init__(self, baseline: Baseline, align: str = "step") -> None:
        if align not in ALIGNS:
            raise ValueError(f"--align {align!r}: one of {', '.join(ALIGNS)}")
        self.baseline = baseline
        self.align = align
        self._base: tuple[np.ndarray, np.ndarray] | None = None
        if align != "step":
            p = Progress(align)
            p.update(baseline.data, baseline.store.facts)
            self._base = p.anchors(baseline.data.axis.last)
        self._live: dict[int, Progress] = {}  # per live RankData (by id): its progress, kept up to date
        self.memo: dict[tuple, Any] = {}  # the header's first-reach scans (standing)

    def _live_anchors(self, live: RankData, facts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        p = self._live.get(id(live))
        if p is None or p.rows > live.axis.n:  # a new store (the run restarted): start again
            if len(self._live) > 64:
                self._live.clear()
            p = self._live[id(live)] = Progress(self.align)
        p.update(live, facts)
        return p.anchors(live.axis.last)

    def fallback(self, live: RankData | None, facts: dict[str, Any]) -> str | None:
        """Why this alignment cannot be used (then steps are), or None."""
        if self.align == "step":
            return None
        what = "epochs" if self.align == "epoch" else "samples seen"
        if self._base is None:
            return f"the baseline has no {what}: aligned by step"
        if live is not None and self._live_anchors(live, facts) is None:
            return f"this run has no {what} yet: aligned by step"
        return None

    def to_baseline(self, live: RankData | None, facts: dict[str, Any], steps: np.ndarray) -> np.ndarray:
        """The baseline steps beside these steps of this run (floats)."""
        steps = np.asarray(steps, dtype=np.float64)
        if self.align == "step" or self._base is None or live is None:
            return steps
        mine = self._live_anchors(live, facts)
        if mine is None:
            return steps
        coord = _interp(steps, *mine)
        return _interp(coord, self._base[1], self._base[0])
