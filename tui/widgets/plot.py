"""The numbers behind the braille charts, pure numpy over the store: which rows each dot column covers, a series'
per-column buckets for one rank or a group of ranks (`SeriesReader`), the smoothing, the scale, and the dot
spans and braille cells a column draws. Shared by the line charts (chart.py) and the heat maps (heatmap.py)."""

from __future__ import annotations

import math

import numpy as np

from ..store import Buckets, RankData, RankGroup, is_missing

# Braille dot weights, rows 0–3 × columns 0–1 of a cell (Unicode braille patterns, U+2800 block).
DOT = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint16)
BRAILLE = np.array([" "] + [chr(0x2800 + i) for i in range(1, 256)], dtype="<U1")
# Values beyond this are drawn at it and marked ✕ as NaN and Inf are: a span wider than ~1e308 overflows the
# scale's arithmetic, and nothing a person reads off a chart needs more than 300 decades.
MAX_PLOT = 1e300
# The largest float64 below 2**63: steps near the int64 limit are placed in float and read back as int64.
_STEP_MAX = float(np.nextafter(2.0**63, 0))


def ema(means: np.ndarray, counts: np.ndarray, strength: float) -> np.ndarray:
    """EMA over column means; a column of k rows weighs like k steps. Debiased from the first value."""
    out = np.full(len(means), np.nan)
    acc = 0.0
    weight = 0.0
    for i, (m, k) in enumerate(zip(means.tolist(), counts.tolist())):
        if k > 0 and math.isfinite(m):
            decay = strength ** k
            acc = decay * acc + (1 - decay) * m
            weight = decay * weight + (1 - decay)
        if weight > 0:
            out[i] = acc / weight
    return out


def step_edges(data: RankData, x0: float, x1: float, n: int, head: int | None) -> np.ndarray:
    """Row edges of n equal step ranges over [x0, x1]; the last range includes x1. Rows after head excluded."""
    return row_edges(data, x0 + (x1 - x0) * np.arange(n + 1) / n, head)


def row_edges(data: RankData, step_edges: np.ndarray, head: int | None = None) -> np.ndarray:
    """Row edges of the step ranges between consecutive `step_edges` (non-decreasing); the last range includes
    its end. Rows after head excluded."""
    se = np.clip(np.nan_to_num(np.asarray(step_edges, dtype=np.float64), nan=-_STEP_MAX), -_STEP_MAX, _STEP_MAX)
    se = np.maximum.accumulate(se)
    edges = data.axis.rows(np.ceil(se[:-1]).astype(np.int64), "left")
    last = data.axis.rows(np.array([math.floor(se[-1])], dtype=np.int64), "right")
    edges = np.maximum.accumulate(np.concatenate([edges, last]))
    if head is not None:
        edges = np.minimum(edges, data.axis.rows(np.array([head], dtype=np.int64), "right")[0])
    return edges


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Interpolate empty columns between measured ones (a validation series measured every 1000 steps)."""
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return values
    idx = np.flatnonzero(ok)
    out = values.copy()
    inner = np.arange(idx[0], idx[-1] + 1)
    out[inner] = np.interp(inner, idx, values[idx])
    return out


def scaled(b: Buckets, log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A series' per-column min and max as drawn (log10 on a log scale), finite values clamped to ±MAX_PLOT;
    and which columns were clamped (marked ✕ like NaN and Inf)."""
    mins, maxs = b.mins.astype(np.float64), b.maxs.astype(np.float64)
    with np.errstate(invalid="ignore"):
        over = (np.abs(mins) > MAX_PLOT) & np.isfinite(mins) | (np.abs(maxs) > MAX_PLOT) & np.isfinite(maxs)
    if over.any():
        mins, maxs = np.clip(mins, -MAX_PLOT, MAX_PLOT), np.clip(maxs, -MAX_PLOT, MAX_PLOT)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            mins = np.where(mins > 0, np.log10(mins), np.nan)
            maxs = np.where(maxs > 0, np.log10(maxs), np.nan)
            # A span reaching zero or below on a log scale: draw what is positive.
            mins = np.where(np.isnan(mins) & ~np.isnan(maxs), maxs, mins)
    return mins, maxs, over


def spans(top: np.ndarray, bot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join each column's dot span to the previous drawn column's, so the line has no breaks."""
    valid = ~(np.isnan(top) | np.isnan(bot))
    t = np.where(valid, top, 0).astype(np.int64)
    b = np.where(valid, bot, 0).astype(np.int64)
    idx = np.where(valid, np.arange(len(t)), -1)
    prev = np.maximum.accumulate(idx)
    prev = np.concatenate([[-1], prev[:-1]])
    has_prev = valid & (prev >= 0)
    pt, pb = t[np.maximum(prev, 0)], b[np.maximum(prev, 0)]
    t2 = np.where(has_prev & (t > pb), pb, t)
    b2 = np.where(has_prev & (b < pt), pt, b)
    return t2, b2, valid


def dots_to_cells(top: np.ndarray, bot: np.ndarray, valid: np.ndarray, rows: int) -> np.ndarray:
    """Braille bit patterns (rows × cols) for vertical dot spans per dot column."""
    hd = rows * 4
    r = np.arange(hd)[:, None]
    mask = (r >= top[None, :]) & (r <= bot[None, :]) & valid[None, :]
    wd = mask.shape[1]
    m = mask.reshape(rows, 4, wd // 2, 2)
    return (m * DOT[None, :, None, :]).sum(axis=(1, 3)).astype(np.uint16)


class SeriesReader:
    """Buckets of a series over the chart's columns, for one rank or a group of ranks; row edges are computed
    once per rank and reused by every series of the chart."""

    def __init__(self, data: RankData | RankGroup, x0: float, x1: float, n: int, head: int | None) -> None:
        self.data, self.x0, self.x1, self.n, self.head = data, x0, x1, n, head
        self._edges: dict[object, np.ndarray] = {}

    def edges(self, d: RankData) -> np.ndarray:
        ax = d.axis
        # Ranks of one DDP run usually log the same steps: equal regular axes have equal edges, computed once.
        key: object = (ax.first, ax.stride, ax.n) if ax.stride is not None and ax.stride > 0 else d.rank
        e = self._edges.get(key)
        if e is None:
            e = self._edges[key] = step_edges(d, self.x0, self.x1, self.n, self.head)
        return e

    def buckets(self, name: str) -> Buckets | None:
        if isinstance(self.data, RankGroup):
            return self.data.buckets(name, self.edges)
        col = self.data.columns.get(name)
        return None if col is None else col.buckets(self.edges(self.data))


def log_line(v: np.ndarray, log: bool) -> np.ndarray:
    """A line's values as drawn: clamped to ±MAX_PLOT, log10 on a log scale (NaN where not positive)."""
    v = np.clip(v, -MAX_PLOT, MAX_PLOT)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(v > 0, np.log10(v), np.nan)
    return v


def sampled_every(data: RankData, name: str) -> int | None:
    """The step gap between a series' last two samples, when it is more than one step (a sampled statistic)."""
    col = data.columns.get(name)
    n = data.axis.n
    if col is None or n < 2:
        return None
    r0 = max(0, n - 4096)
    ok = np.flatnonzero(~is_missing(col.values(r0, n)))
    if len(ok) < 2:
        return None
    s = data.axis.steps_at(np.array([r0 + ok[-2], r0 + ok[-1]], dtype=np.int64))
    gap = int(s[1] - s[0])
    return gap if gap > 1 else None
