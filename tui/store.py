"""The viewer's memory of a run: columnar numpy series, per rank, that any chart can decimate to its width.

Rendering cost must follow the screen, not the run (design.md, principle 6), and 1 M steps × 50 series must
fit in 200 MB with the interpreter and the app. So:

- Every rank has one row axis (`StepAxis`): one row per training step received, steps non-decreasing.
  Every series of that rank has one value per row — "not measured" is a reserved NaN payload (`MISSING`),
  distinct from a real NaN, which is the event accmon most needs to show.
- Rows live in chunks of `CHUNK` rows. The newest chunk is plain float32 (exact to float32). A chunk that
  fills up is *sealed*: its values are quantised to 16 bits relative to that chunk's own range (a log scale
  for positive series spanning more than `LOG_RATIO`), with four codes kept for −Inf, +Inf, NaN and missing.
  The error is at most 1/131,062 of the chunk's range — far below a terminal cell, which is what a chart
  resolves — and it halves the memory of float32 (2 bytes per value instead of 4).
- Each chunk keeps min, max, sum and count of its finite values per `BLOCK` rows, and flags for NaN/±Inf.
  A chart asking for a few hundred columns over 10 M rows reads those block summaries (~40 k of them), never
  the rows: a redraw costs the same at step 1,000 and at step 10,000,000.

Everything here is plain numpy, no Textual: it is tested, and benchmarked, without an app.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accmon.probe import wire
from accmon.probe.rules import SEVERITY_RANK

CHUNK = 1 << 15  # rows per chunk: the unsealed tail costs at most 128 KiB per series
BLOCK = 256  # rows per block summary: 9 bytes of summary per 256 rows (0.035 B/row)
BLOCKS_PER_CHUNK = CHUNK // BLOCK
# Above this max/min ratio a positive chunk is quantised on a log scale: linear codes would keep the smallest
# values to only 100/65531 ≈ 0.15 % — visible on a log-scale chart of gradient norms, which span decades.
LOG_RATIO = 100.0

MISSING_BITS = np.uint32(0x7FC0_0A11)  # a quiet NaN with a payload no float arithmetic produces
MISSING = np.array([MISSING_BITS], dtype=np.uint32).view(np.float32)[0]
_LEVELS = 65532  # codes 0..65531 carry values; 65532.. are the specials below
_C_NEGINF, _C_POSINF, _C_NAN, _C_MISSING = 65532, 65533, 65534, 65535
_MODE_EMPTY, _MODE_LINEAR, _MODE_LOG = 0, 1, 2

FLAG_NAN, FLAG_POSINF, FLAG_NEGINF = 1, 2, 4


def is_missing(values: np.ndarray) -> np.ndarray:
    """True where a float32 array holds the 'not measured' marker."""
    return values.view(np.uint32) == MISSING_BITS


class _Grow:
    """A 1-D array with amortised appends (doubling), for the small per-block summaries."""

    __slots__ = ("data", "n")

    def __init__(self, dtype: Any, capacity: int = 64) -> None:
        self.data = np.empty(capacity, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            new = np.empty(max(need, 2 * len(self.data)), dtype=self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.data[self.n : need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return self.data[: self.n]


@dataclass
class _Sealed:
    """One full chunk, quantised: value = a + code·b (linear) or exp(a + code·b) (log)."""

    mode: int
    a: float = 0.0
    b: float = 0.0
    codes: np.ndarray | None = None  # uint16, None for a chunk that holds nothing measured
    specials: bool = False  # any code ≥ _C_NEGINF present

    def decode(self, i0: int, i1: int) -> np.ndarray:
        if self.mode == _MODE_EMPTY or self.codes is None:
            out = np.empty(i1 - i0, dtype=np.float32)
            out.view(np.uint32)[:] = MISSING_BITS
            return out
        codes = self.codes[i0:i1]
        if self.mode == _MODE_LINEAR:
            out = (codes.astype(np.float64) * self.b + self.a).astype(np.float32)
        else:
            out = np.exp(codes.astype(np.float64) * self.b + self.a).astype(np.float32)
        if self.specials:
            out[codes == _C_NAN] = np.nan
            out[codes == _C_POSINF] = np.inf
            out[codes == _C_NEGINF] = -np.inf
            out.view(np.uint32)[codes == _C_MISSING] = MISSING_BITS
        return out


def _seal(values: np.ndarray) -> _Sealed:
    missing = is_missing(values)
    finite = np.isfinite(values)
    if not finite.any():
        if missing.all():
            return _Sealed(_MODE_EMPTY)
        lo = hi = 0.0
    else:
        fv = values[finite]
        lo, hi = float(fv.min()), float(fv.max())
    if lo > 0 and hi / lo > LOG_RATIO:
        mode, a = _MODE_LOG, math.log(lo)
        b = (math.log(hi) - a) / (_LEVELS - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = (np.log(values.astype(np.float64)) - a) / b
    else:
        mode, a = _MODE_LINEAR, lo
        b = (hi - lo) / (_LEVELS - 1)
        scaled = (values.astype(np.float64) - a) / b if b > 0 else np.zeros(len(values))
    codes = np.rint(np.where(finite, scaled, 0.0)).clip(0, _LEVELS - 1).astype(np.uint16)
    specials = not finite.all()
    if specials:
        codes[np.isnan(values)] = _C_NAN
        codes[values == np.inf] = _C_POSINF
        codes[values == -np.inf] = _C_NEGINF
        codes[missing] = _C_MISSING
    return _Sealed(mode, a, b, codes, specials)


def _block_summary(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """min, max, sum, count of finite values and NaN/±Inf flags per BLOCK rows (a partial last block too)."""
    n = len(values)
    nb = -(-n // BLOCK)
    padded = values
    if nb * BLOCK != n:
        padded = np.empty(nb * BLOCK, dtype=np.float32)
        padded[:n] = values
        padded.view(np.uint32)[n:] = MISSING_BITS
    v = padded.reshape(nb, BLOCK)
    finite = np.isfinite(v)
    vf = np.where(finite, v, np.nan)
    bmin = np.fmin.reduce(vf, axis=1)
    bmax = np.fmax.reduce(vf, axis=1)
    bsum = np.where(finite, v, 0.0).sum(axis=1, dtype=np.float64)
    bcnt = finite.sum(axis=1).astype(np.uint16)
    flags = np.zeros(nb, dtype=np.uint8)
    if not finite.all():
        missing = v.view(np.uint32) == MISSING_BITS
        flags |= ((np.isnan(v) & ~missing).any(axis=1) * FLAG_NAN).astype(np.uint8)
        flags |= ((v == np.inf).any(axis=1) * FLAG_POSINF).astype(np.uint8)
        flags |= ((v == -np.inf).any(axis=1) * FLAG_NEGINF).astype(np.uint8)
    return bmin, bmax, bsum, bcnt, flags


@dataclass
class Buckets:
    """Per-column summary of a series over row ranges: what a chart draws."""

    mins: np.ndarray  # float32, NaN where the bucket holds no finite value
    maxs: np.ndarray
    means: np.ndarray  # float64
    counts: np.ndarray  # finite values per bucket
    flags: np.ndarray  # FLAG_NAN | FLAG_POSINF | FLAG_NEGINF

    @classmethod
    def empty(cls, n: int) -> Buckets:
        nan = np.full(n, np.nan, dtype=np.float32)
        return cls(nan, nan.copy(), np.full(n, np.nan), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.uint8))


class Column:
    """One series of one rank: a float32 value per row of the rank's axis, in chunks (see module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self._sealed: list[_Sealed] = []
        self._open = np.empty(CHUNK, dtype=np.float32)
        self._n_open = 0
        self._bmin = _Grow(np.float32)
        self._bmax = _Grow(np.float32)
        self._bsum = _Grow(np.float64)
        self._bcnt = _Grow(np.uint16)
        self._bflags = _Grow(np.uint8)
        self._open_summary: tuple[int, tuple[np.ndarray, ...]] | None = None
        self.measured = 0  # rows with a value (finite or not)
        self.last_value: float | None = None  # exact (float64) newest measured value
        self.last_finite: float | None = None
        self.nonfinite = 0  # rows holding NaN or ±Inf

    # -- writing ---------------------------------------------------------------------------------------
    def _seal_open(self) -> None:
        vals = self._open
        bmin, bmax, bsum, bcnt, flags = _block_summary(vals)
        self._bmin.extend(bmin)
        self._bmax.extend(bmax)
        self._bsum.extend(bsum)
        self._bcnt.extend(bcnt)
        self._bflags.extend(flags)
        self._sealed.append(_seal(vals))
        self._n_open = 0
        self._open_summary = None

    def append(self, values: np.ndarray) -> None:
        """Append float32 values (MISSING where not measured), one per new row."""
        pos, m = 0, len(values)
        while pos < m:
            if self._n_open == CHUNK:
                self._seal_open()
            take = min(CHUNK - self._n_open, m - pos)
            self._open[self._n_open : self._n_open + take] = values[pos : pos + take]
            self._n_open += take
            pos += take
        self.n += m

    def append_missing(self, m: int) -> None:
        pos = 0
        while pos < m:
            if self._n_open == CHUNK:
                self._seal_open()
            take = min(CHUNK - self._n_open, m - pos)
            self._open.view(np.uint32)[self._n_open : self._n_open + take] = MISSING_BITS
            self._n_open += take
            pos += take
        self.n += m

    def set_last(self, value: np.float32) -> None:
        """Overwrite the newest row (a step continued in the next frame). The newest row is always unsealed."""
        self._open[self._n_open - 1] = value

    # -- reading ---------------------------------------------------------------------------------------
    def values(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Rows [r0, r1) as float32 (sealed chunks decoded); MISSING where not measured."""
        r1 = self.n if r1 is None else min(r1, self.n)
        r0 = max(0, r0)
        if r1 <= r0:
            return np.empty(0, dtype=np.float32)
        parts = []
        nsealed = len(self._sealed) * CHUNK
        c0, c1 = r0 // CHUNK, (r1 - 1) // CHUNK
        for c in range(c0, c1 + 1):
            lo = max(r0, c * CHUNK) - c * CHUNK
            hi = min(r1, (c + 1) * CHUNK) - c * CHUNK
            if c * CHUNK >= nsealed:
                parts.append(self._open[lo:hi])
            else:
                parts.append(self._sealed[c].decode(lo, hi))
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def _blocks(self, b0: int, b1: int) -> tuple[np.ndarray, ...]:
        """Block summaries [b0, b1), the unsealed chunk's computed on demand (and cached until it grows)."""
        sealed_blocks = self._bmin.n
        out = []
        sealed = (self._bmin, self._bmax, self._bsum, self._bcnt, self._bflags)
        if b1 <= sealed_blocks:
            return tuple(g.view()[b0:b1] for g in sealed)
        if self._open_summary is None or self._open_summary[0] != self._n_open:
            self._open_summary = (self._n_open, _block_summary(self._open[: self._n_open]))
        tail = self._open_summary[1]
        t0, t1 = max(0, b0 - sealed_blocks), b1 - sealed_blocks
        for g, t in zip(sealed, tail):
            if b0 >= sealed_blocks:
                out.append(t[t0:t1])
            else:
                out.append(np.concatenate([g.view()[b0:], t[:t1]]))
        return tuple(out)

    def buckets(self, edges: np.ndarray) -> Buckets:
        """Summaries of rows [edges[i], edges[i+1]) for each i. Reads block summaries when buckets are wide."""
        edges = np.clip(np.asarray(edges, dtype=np.int64), 0, self.n)
        nb = len(edges) - 1
        if nb <= 0:
            return Buckets.empty(0)
        widths = np.diff(edges)
        nonempty = widths > 0
        if not nonempty.any():
            return Buckets.empty(nb)
        if widths[nonempty].min() >= 2 * BLOCK:
            # Edges rounded to whole blocks: each bucket moves by at most half a block, a quarter of its width.
            bedges = (edges + BLOCK // 2) // BLOCK
            if edges[-1] == self.n:
                bedges[-1] = -(-self.n // BLOCK)  # the partial last block belongs to the last bucket
            b0, b1 = int(bedges[0]), int(bedges[-1])
            bmin, bmax, bsum, bcnt, bflags = self._blocks(b0, b1)
            return _reduce(bedges - b0, bmin, bmax, bsum, bcnt.astype(np.int64), bflags)
        r0, r1 = int(edges[0]), int(edges[-1])
        v = self.values(r0, r1)
        finite = np.isfinite(v)
        vf = np.where(finite, v, np.float32(np.nan))
        flags = np.zeros(len(v), dtype=np.uint8)
        if not finite.all():
            flags[np.isnan(v) & ~is_missing(v)] |= FLAG_NAN
            flags[v == np.inf] |= FLAG_POSINF
            flags[v == -np.inf] |= FLAG_NEGINF
        return _reduce(edges - r0, vf, vf, np.where(finite, v.astype(np.float64), 0.0), finite.astype(np.int64), flags)


def _reduce(edges: np.ndarray, mins: np.ndarray, maxs: np.ndarray, sums: np.ndarray, cnts: np.ndarray,
            flags: np.ndarray) -> Buckets:
    """Reduce element (or block) arrays over buckets [edges[i], edges[i+1]); empty buckets come out empty."""
    nb = len(edges) - 1
    n = len(mins)
    out = Buckets.empty(nb)
    if n == 0:
        return out
    nonempty = (edges[1:] > edges[:-1]) & (edges[:-1] < n)
    idx = np.minimum(edges[:-1], n - 1)
    bmin = np.fmin.reduceat(mins, idx)
    bmax = np.fmax.reduceat(maxs, idx)
    bsum = np.add.reduceat(sums, idx)
    bcnt = np.add.reduceat(cnts, idx)
    bfl = np.bitwise_or.reduceat(flags, idx)
    out.mins[nonempty] = bmin[nonempty]
    out.maxs[nonempty] = bmax[nonempty]
    out.counts[nonempty] = bcnt[nonempty]
    out.flags[nonempty] = bfl[nonempty]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = bsum / np.maximum(bcnt, 1)
    means[bcnt == 0] = np.nan
    out.means[nonempty] = means[nonempty]
    return out


class StepAxis:
    """The step number of every row of one rank, non-decreasing, in chunks aligned with the columns'."""

    def __init__(self) -> None:
        self.n = 0
        self._chunks: list[np.ndarray] = []  # sealed chunks, CHUNK rows each
        self._firsts: list[int] = []
        self._open = np.empty(CHUNK, dtype=np.int64)
        self._n_open = 0
        self.first: int | None = None
        self.last: int | None = None
        # Steps logged at a fixed stride (every step, or every k-th): row = (step - first) / stride, no search.
        # None until known, -1 once the steps are irregular.
        self.stride: int | None = None

    def _update_stride(self, steps: np.ndarray) -> None:
        if self.stride == -1 or len(steps) == 0:
            return
        diffs = np.diff(steps)
        if self.last is not None:
            diffs = np.concatenate([[int(steps[0]) - self.last], diffs])
        if not len(diffs):
            return
        s = int(diffs[0])
        if s <= 0 or (diffs != s).any() or self.stride not in (None, s):
            self.stride = -1
        else:
            self.stride = s

    def append(self, steps: np.ndarray) -> None:
        self._update_stride(steps)
        pos, m = 0, len(steps)
        while pos < m:
            if self._n_open == CHUNK:
                self._chunks.append(self._open)
                self._firsts.append(int(self._open[0]))
                self._open = np.empty(CHUNK, dtype=np.int64)
                self._n_open = 0
            take = min(CHUNK - self._n_open, m - pos)
            self._open[self._n_open : self._n_open + take] = steps[pos : pos + take]
            self._n_open += take
            pos += take
        if m:
            self.n += m
            if self.first is None:
                self.first = int(steps[0])
            self.last = int(steps[-1])

    def _chunk(self, c: int) -> np.ndarray:
        return self._chunks[c] if c < len(self._chunks) else self._open[: self._n_open]

    def rows(self, steps: np.ndarray, side: str = "left") -> np.ndarray:
        """Row index of each step, as np.searchsorted over the whole axis would give it."""
        steps = np.asarray(steps, dtype=np.int64)
        out = np.empty(len(steps), dtype=np.int64)
        if self.n == 0:
            out[:] = 0
            return out
        if self.stride is not None and self.stride > 0:
            assert self.first is not None
            rel = steps - self.first
            rows = -(-rel // self.stride) if side == "left" else rel // self.stride + 1
            return np.clip(rows, 0, self.n)
        firsts = np.array(self._firsts + [int(self._open[0]) if self._n_open else 2**62], dtype=np.int64)
        # A step equal to a chunk's first step may also end the chunk before (equal steps): search from the left.
        which = np.clip(np.searchsorted(firsts, steps, side=side) - 1, 0, len(firsts) - 1)  # type: ignore[call-overload]
        for c in np.unique(which):
            sel = which == c
            chunk = self._chunk(int(c))
            out[sel] = c * CHUNK + np.searchsorted(chunk, steps[sel], side=side)  # type: ignore[call-overload]
        return out

    def steps_at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.clip(np.asarray(rows, dtype=np.int64), 0, max(self.n - 1, 0))
        out = np.empty(len(rows), dtype=np.int64)
        if self.n == 0:
            out[:] = 0
            return out
        which = rows // CHUNK
        for c in np.unique(which):
            sel = which == c
            out[sel] = self._chunk(int(c))[rows[sel] - c * CHUNK]
        return out


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




@dataclass
class AlertBook:
    """Alerts by identity (id, rank, cause), in the order first seen. `by_key` holds each alert's newest update;
    `history` a bounded list of its updates in the order of the step each is as of, so that a replay describes an
    alert as it stood at the playhead (`at`), not as it ended."""

    by_key: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)
    version: int = 0

    def update(self, alert: dict[str, Any]) -> bool:
        if not isinstance(alert, dict) or not isinstance(alert.get("id"), str):
            return False
        alert = dict(alert)
        step = alert.get("step")
        alert["step"] = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else -1
        if alert.get("severity") not in SEVERITY_RANK:
            alert["severity"] = "info"
        key = (alert["id"], alert.get("rank") or 0, str(alert.get("cause", "")))
        hist = self.history.setdefault(key, [])
        at = as_of_step(alert)
        # In step order; an update as of the same step as the last one replaces it (the same evidence, or its
        # clearing). An update that arrives late (a replay's streamed alerts after today's final diagnosis) takes its
        # place in the order and never hides a newer one.
        i = len(hist)
        while i and as_of_step(hist[i - 1]) > at:
            i -= 1
        if i and as_of_step(hist[i - 1]) == at:
            hist[i - 1] = alert
        else:
            hist.insert(i, alert)
        if len(hist) > ALERT_HISTORY:
            # Alerts update rarely; one that updates often keeps its first update, every other one of the older
            # half and all of the newer half: the playhead finds an update near it wherever it is.
            half = ALERT_HISTORY // 2
            hist[:] = [hist[0], *hist[1:-half:2], *hist[-half:]]
        self.by_key[key] = hist[-1]
        self.version += 1
        return True

    def replaced_by(self, alerts: Iterable[dict[str, Any]]) -> AlertBook:
        """A book of `alerts` (a replay's final diagnosis: each alert's newest update), each with the updates this
        book saw of it before: the rules child streamed them as they fired."""
        book = AlertBook()
        final = [a for a in alerts if isinstance(a, dict) and isinstance(a.get("id"), str)]
        keys = {(a["id"], a.get("rank") or 0, str(a.get("cause", ""))) for a in final}
        for key in keys:
            for a in self.history.get(key, ()):
                book.update(a)
        for a in final:
            book.update(a)
        book.version = self.version + 1
        return book

    def at(self, key: tuple, step: int | None) -> dict[str, Any] | None:
        """The alert `key` as it stood at `step`: its last update as of `step` or before; its first when even that
        one is from after `step` (the detail then says its numbers are from later). None: no such alert."""
        hist = self.history.get(key)
        if not hist:
            return self.by_key.get(key)
        if step is None:
            return hist[-1]
        chosen = hist[0]
        for a in hist:
            if as_of_step(a) > step:
                break
            chosen = a
        return chosen

    def newest_first(self, up_to_step: int | None = None) -> list[tuple[tuple, dict[str, Any]]]:
        """The alerts raised at `up_to_step` or before, each as it stood then (all of them, as they are now, for
        None), newest first, the most severe first within a step."""
        items = list(self.by_key.items()) if up_to_step is None else [
            (k, a) for k, a in ((k, self.at(k, up_to_step) or a) for k, a in self.by_key.items()) if a["step"] <= up_to_step]
        return sorted(items, key=lambda ka: (-ka[1]["step"], -SEVERITY_RANK[ka[1]["severity"]], ka[1]["id"]))

    def steps(self) -> list[tuple[int, str]]:
        """(step, severity) of every alert, for markers on time axes."""
        return [(a["step"], a["severity"]) for a in self.by_key.values()]

    def __len__(self) -> int:
        return len(self.by_key)


ALERT_HISTORY = 64  # updates kept per alert (see AlertBook.update)


def as_of_step(alert: dict[str, Any]) -> int:
    """The step an alert update describes the run at: when it was cleared, else the last step its evidence was
    taken at, else when it was raised."""
    for k in ("cleared_step", "last_step", "step"):
        v = alert.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return -1


def alert_message(alert: dict[str, Any]) -> str:
    """An alert's message as every view shows it. A cleared alert keeps the message of its last active update,
    which reads as if it still held ("accuracy is stuck at chance"): it is bounded in time instead, "until step
    207: accuracy is stuck at chance …", beside its "(cleared)" label."""
    message = str(alert.get("message", ""))
    if alert.get("state") != "cleared":
        return message
    at = alert.get("cleared_step")
    return f"until step {at}: {message}" if isinstance(at, int) and not isinstance(at, bool) else f"earlier: {message}"


def clean_stop(stopped: Any) -> dict[str, Any] | None:
    """An end frame's `stopped` ({"by", "reason", "step"}: who stopped a run that did not crash), as the viewer and
    `check` show it: known fields of known types, whatever a recording or a peer holds; None when there is none."""
    if not isinstance(stopped, dict) or not isinstance(stopped.get("by"), str):
        return None
    step = stopped.get("step")
    reason = stopped.get("reason")
    out = {"by": stopped["by"][:64], "reason": reason[:200] if isinstance(reason, str) else None,
           "step": step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None}
    if isinstance(stopped.get("alert"), str):  # by "alert" (--stop-on): which alert id
        out["alert"] = stopped["alert"][:64]
    return out


def interrupted_exit(exit: dict[str, Any] | None, stopped: dict[str, Any] | None = None) -> bool:
    """An `exit` frame of a command the user interrupted: SIGINT, or the shell's 130 for it. With an end frame
    that says the user stopped the run, that exit is how a Ctrl-C ends Python, not a crash. A run accmon stopped
    (`stopped` by "alert" or "viewer") whose script let StopTraining go uncaught exits with 1: Python ends by
    SIGINT only for KeyboardInterrupt itself, not a subclass."""
    if exit is not None and stopped and stopped.get("by") in ("alert", "viewer") and exit.get("exit_code") == 1:
        return True
    return exit is not None and (exit.get("signal") == "SIGINT" or exit.get("exit_code") == 130)


def stop_words(stopped: dict[str, Any] | None) -> str | None:
    """'stopped by the user (Ctrl-C) at step 41', or None: one wording for the header, headless and `check`."""
    if not stopped:
        return None
    if stopped["by"] == "alert":  # --stop-on: "nan_loss: the loss is NaN ..." → stopped by accmon: nan_loss at step N (...)
        alert, _, why = (stopped.get("reason") or "an alert").partition(": ")
        at = f" at step {stopped['step']}" if stopped.get("step") is not None else ""
        return f"stopped by accmon: {alert}{at}" + (f" ({why})" if why else "")
    how = " (Ctrl-C)" if stopped["by"] == "user" and stopped.get("reason") == "KeyboardInterrupt" else \
        f" ({stopped['reason']})" if stopped.get("reason") else ""
    who = {"user": "the user", "viewer": "the viewer"}.get(stopped["by"], stopped["by"])
    at = f" at step {stopped['step']}" if stopped.get("step") is not None else ""
    return f"stopped by {who}{how}{at}"


@dataclass
class Changes:
    """What one batch of frames changed: the app redraws only the widgets that show it."""

    steps: set[int] = field(default_factory=set)  # ranks with new rows
    alerts: bool = False
    facts: bool = False
    meta: bool = False
    ended: bool = False
    malformed: int = 0

    def __bool__(self) -> bool:
        return bool(self.steps or self.alerts or self.facts or self.meta or self.ended or self.malformed)


class RunStore:
    """One run as the viewer knows it: meta, facts, per-rank series, alerts, how it ended."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.meta: dict[int, dict[str, Any]] = {}
        self.facts: dict[str, Any] = {}
        self.ranks: dict[int, RankData] = {}
        self.alerts = AlertBook()
        self.ends: dict[int, dict[str, Any]] = {}
        self.exit: dict[str, Any] | None = None
        self.malformed = 0
        # Steps the probe's queue dropped so far, as its heartbeats say (set by the live source): shown before the end.
        self.live_dropped = 0
        self.last_problem: str | None = None
        self.frames = 0
        self.version = 0
        # Sharded models: the ranks' grad_sq/<layer> combined into true norms (None until a rank sends one).
        self.shards: ShardCombiner | None = None
        self._group: RankGroup | None = None

    def rank(self, r: int) -> RankData:
        data = self.ranks.get(r)
        if data is None:
            data = self.ranks[r] = RankData(r)
        return data

    @property
    def name(self) -> str | None:
        m = self.meta.get(0) or next(iter(self.meta.values()), {})
        return m.get("name") if isinstance(m.get("name"), str) else None

    def ingest(self, frames: Iterable[dict[str, Any]]) -> Changes:
        """Apply decoded frames. A frame that does not fit the contract is counted and skipped, never raised."""
        ch = Changes()
        for frame in frames:
            try:
                self._ingest_one(frame, ch)
            except Exception as exc:  # malformed input gets a clear note, never a crash (design.md, principle 4)
                self.malformed += 1
                ch.malformed += 1
                kind = frame.get("kind") if isinstance(frame, dict) else type(frame).__name__
                self.last_problem = f"ignored a malformed {kind} frame: {exc.__class__.__name__}: {exc}"
        if self.shards is not None and (ch.steps or ch.ended) and self.shards.update(self):
            ch.steps.add(self.shards.data.rank)
        if ch:
            self.version += 1
        return ch

    def all_ranks(self) -> RankGroup:
        """Every rank together (the same object while the set of ranks stays the same: charts cache on it)."""
        ids = sorted(self.ranks)
        if self._group is None or self._group.rank_ids != ids:
            self._group = RankGroup([self.ranks[r] for r in ids])
        return self._group

    def sharded(self) -> RankData | None:
        """The combined per-layer gradient norms of a sharded run, once a step has been combined."""
        return self.shards.data if self.shards is not None and self.shards.data.axis.n else None

    def _ingest_one(self, frame: dict[str, Any], ch: Changes) -> None:
        kind = frame["kind"]
        rank = frame.get("rank", 0)
        if not isinstance(rank, int):
            raise TypeError(f"rank {rank!r} is not an int")
        if rank not in self.ranks and len(self.ranks) >= MAX_RANKS:
            raise ValueError(f"more than {MAX_RANKS} ranks in one run: rank {rank} left out")
        self.frames += 1
        if self.run_id is None and isinstance(frame.get("run"), str):
            self.run_id = frame["run"]
        if kind == "steps":
            if not isinstance(frame.get("steps"), (list, np.ndarray)) or not isinstance(frame.get("cols", {}), dict):
                raise TypeError("steps frame without a steps list and a cols map")
            self.rank(rank).add_steps(frame)
            ch.steps.add(rank)
            if self.shards is None and any(isinstance(k, str) and k.startswith(SHARD_PREFIX) for k in frame["cols"]):
                self.shards = ShardCombiner()
        elif kind == "alert":
            if not self.alerts.update({**frame["alert"], "rank": frame["alert"].get("rank", rank)}):
                raise ValueError("alert without an id")
            ch.alerts = True
        elif kind == "facts":
            facts = frame["facts"]
            if not isinstance(facts, dict):
                raise TypeError("facts is not a map")
            if rank == 0 or not self.facts:
                self.facts.update(facts)
            ch.facts = True
        elif kind == "meta":
            self.meta[rank] = {k: v for k, v in frame.items() if k not in ("v", "kind", "seq")}
            self.rank(rank)
            ch.meta = True
        elif kind == "end":
            self.ends[rank] = frame
            ch.ended = True
        elif kind == "exit":
            self.exit = frame
            ch.ended = True

    # -- summaries for the header -----------------------------------------------------------------------
    def status(self) -> str | None:
        """'finished', 'crashed' or 'truncated' once the run ended; None while it runs. A run that lost steps,
        or whose command exited with no end frame (its recording cut short), is never 'finished'."""
        if any(e.get("status") == "crashed" for e in self.ends.values()):
            return "crashed"
        if self.exit is not None:
            code, sig = self.exit.get("exit_code"), self.exit.get("signal")
            if (sig or code not in (0, None)) and not (self.stopped() and interrupted_exit(self.exit, self.stopped())):
                return "crashed"
            if not self.ends:
                return "truncated"
        if self.exit is not None or self.ends and len(self.ends) >= max(1, len(self.meta)):
            return "truncated" if self.loss()["lost"] else "finished"
        return None

    def loss(self) -> dict[str, Any]:
        """What the viewer holds of the run, for the header: `logged` (steps the ranks that ended logged, None
        before every rank's end frame), `received`, `lost` (logged and never received: dropped by the probe's
        queue, or no longer held when the viewer joined), `dropped` (of those, the probe's queue's, from the end
        frames and, live, `live_dropped`), `complete` (ended, every step received)."""
        received = sum(d.axis.n for d in self.ranks.values())
        logged: int | None = None
        lost = dropped = 0
        for r, e in self.ends.items():
            total, drop = e.get("total_steps"), e.get("dropped_steps")
            if isinstance(total, int) and not isinstance(total, bool):
                logged = (logged or 0) + total
                data = self.ranks.get(r)
                lost += max(0, total - (data.axis.n if data is not None else 0))
            if isinstance(drop, int) and not isinstance(drop, bool):
                dropped += max(0, drop)
        if logged is not None and len(self.ends) < len(self.ranks):
            logged = None
        dropped = max(dropped, self.live_dropped)
        ended = bool(self.ends) and len(self.ends) >= max(1, len(self.meta))
        return {"logged": logged, "received": received, "lost": max(lost, dropped) if lost or dropped else 0,
                "dropped": dropped, "complete": ended and not lost and not dropped}

    def stopped(self) -> dict[str, Any] | None:
        """Who stopped the run, when it did not crash (the user's Ctrl-C): the first rank's end frame that says so."""
        for r in sorted(self.ends):
            stop = clean_stop(self.ends[r].get("stopped"))
            if stop is not None:
                return stop
        return None

    def error(self) -> str | None:
        for e in self.ends.values():
            if e.get("status") == "crashed":
                return str(e.get("error") or "crashed")
        if self.exit is not None and not (self.stopped() and interrupted_exit(self.exit, self.stopped())):
            if self.exit.get("signal"):
                return f"killed by {self.exit['signal']}"
            if self.exit.get("exit_code") not in (0, None):
                return f"exit code {self.exit['exit_code']}"
        return None

    def last_step(self) -> int | None:
        lasts = [d.axis.last for d in self.ranks.values() if d.axis.last is not None]
        return max(lasts) if lasts else None

    def first_step(self) -> int | None:
        firsts = [d.axis.first for d in self.ranks.values() if d.axis.first is not None]
        return min(firsts) if firsts else None


# -- several ranks together ------------------------------------------------------------------------------------
def _median_rows(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where a column has none), without nanmedian's all-NaN warnings."""
    s = np.sort(values, axis=0)  # NaN sorts last
    k = (~np.isnan(values)).sum(axis=0)
    cols = np.arange(values.shape[1])
    lo = s[np.maximum(k - 1, 0) // 2, cols]
    hi = s[np.minimum(k // 2, values.shape[0] - 1), cols]
    out = np.where(k % 2 == 1, lo, (lo + hi) / 2)
    out[k == 0] = np.nan
    return out


class GroupAxis:
    """What charts read off an axis, for several ranks together: the first and last step of any of them."""

    def __init__(self, ranks: list[RankData]) -> None:
        self._ranks = ranks

    @property
    def n(self) -> int:
        return max((d.axis.n for d in self._ranks), default=0)

    @property
    def first(self) -> int | None:
        firsts = [d.axis.first for d in self._ranks if d.axis.first is not None]
        return min(firsts) if firsts else None

    @property
    def last(self) -> int | None:
        lasts = [d.axis.last for d in self._ranks if d.axis.last is not None]
        return max(lasts) if lasts else None


class RankGroup:
    """Every rank of a run seen together (DDP, torchrun): per chart column, the median across ranks and the
    min–max spread across them.

    Each rank keeps its own row axis (ranks run at their own pace, and may have logged different steps), so a
    column's step range is mapped to rows rank by rank and summarised from that rank's block summaries: the
    cost is the single-rank cost times the number of ranks, whatever the run's length.
    """

    def __init__(self, ranks: list[RankData]) -> None:
        self.ranks = ranks
        self.axis = GroupAxis(ranks)

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(d.version for d in self.ranks)

    @property
    def rank_ids(self) -> list[int]:
        return [d.rank for d in self.ranks]

    def has(self, name: str) -> bool:
        return any(name in d.columns for d in self.ranks)

    def names(self, prefix: str = "") -> list[str]:
        seen: dict[str, None] = {}
        for d in self.ranks:
            seen.update(dict.fromkeys(n for n in d.columns if n.startswith(prefix)))
        return list(seen)

    def latest(self, name: str) -> float | None:
        """The median of the ranks' newest values of a series."""
        vals = [v for d in self.ranks if (v := d.latest(name)) is not None]
        if not vals:
            return None
        finite = [v for v in vals if math.isfinite(v)]
        if len(finite) < len(vals):  # a NaN or Inf on any rank is what must show
            return next(v for v in vals if not math.isfinite(v))
        return float(np.median(finite))

    def buckets(self, name: str, edges_of: Any) -> Buckets | None:
        """Per column: mins/maxs = min and max across ranks of each rank's min and max (a spike on one rank in
        ten million steps still shows); means = median across ranks of each rank's column mean; counts = the
        most rows any rank has in the column (what one column weighs in a per-step EMA); flags OR-ed.

        `edges_of(rank_data)` gives that rank's row edges for the chart's columns. None if no rank has `name`.
        """
        parts = []
        for d in self.ranks:
            col = d.columns.get(name)
            if col is not None and d.axis.n:
                parts.append(col.buckets(edges_of(d)))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        means = np.stack([b.means for b in parts])
        with np.errstate(invalid="ignore"):
            mins = np.fmin.reduce(np.stack([b.mins for b in parts]), axis=0)
            maxs = np.fmax.reduce(np.stack([b.maxs for b in parts]), axis=0)
        counts = np.max(np.stack([b.counts for b in parts]), axis=0)
        flags = np.bitwise_or.reduce(np.stack([b.flags for b in parts]), axis=0)
        return Buckets(mins, maxs, _median_rows(means), counts, flags)


# -- sharded models (FSDP): per-layer norms from the ranks' partial sums of squares ------------------------------
SHARD_PREFIX = "grad_sq/"
# Steps waiting for a slower rank's share. Beyond this many, the oldest are combined from the ranks that reported
# them (a rank that died without an end frame must not hold the others' norms back for ever, nor grow memory).
PENDING_MAX = 1 << 16


class ShardCombiner:
    """The true gradient norms of a sharded model, as a derived series: for each step and layer,
    √(Σ over the ranks that reported the step of grad_sq/<layer>) — each rank holds a shard, so its sum of
    squares is partial and only the squares add up (docs/frames.md; probe/torch/layers.py).

    The probe publishes no global `grad_norm` for sharded parameters (a shard's would be partial); for
    parameters it did not shard it publishes `grad_norm/<layer>` and a `grad_norm` over those alone, the same
    on every rank (replicated). Those count once (the ranks' mean of their squares): a layer's norm here is
    √(Σ_ranks grad_sq/<layer> + mean_ranks grad_norm/<layer>²), and the global norm
    √(Σ_layers Σ_ranks grad_sq/<layer> + mean_ranks grad_norm²).
    `nonfinite_grads` (NaN/Inf elements of each rank's local shards) adds up across ranks the same way.

    Incremental: each rank's rows are read once, as they arrive. A step is combined when every rank that
    publishes shards has gone past it (or ended, or the pending window is full); until then its partial sums
    wait in a small buffer the size of the lag between ranks. The result is a RankData (rank -1) that charts and
    heat maps read like any rank, with `grad_norm/<layer>`, `grad_norm` and `nonfinite_grads` columns.
    """

    def __init__(self) -> None:
        self.data = RankData(-1)
        self.inputs: list[str] = []  # grad_sq/<layer>…, then nonfinite_grads and grad_norm once seen
        self._done: dict[int, int] = {}  # rows of each rank already folded in
        self._p_steps = np.empty(0, dtype=np.int64)  # pending steps (sorted, unique)
        self._p_sum = np.empty((0, 0))  # pending sums per input (grad_norm: of squares)
        self._p_cnt = np.empty((0, 0), dtype=np.int64)  # ranks that reported each step and input
        self.late = 0  # shares that arrived after their step was combined (a rank far behind): not counted

    def _grow_inputs(self, names: list[str]) -> None:
        new = [n for n in names if n not in self.inputs]
        if not new:
            return
        self.inputs += new
        k = len(self.inputs)
        s, c = np.zeros((len(self._p_steps), k)), np.zeros((len(self._p_steps), k), dtype=np.int64)
        s[:, : self._p_sum.shape[1]] = self._p_sum
        c[:, : self._p_cnt.shape[1]] = self._p_cnt
        self._p_sum, self._p_cnt = s, c

    def update(self, store: RunStore) -> bool:
        """Fold in what the ranks received since the last call; combine the steps every rank is past.
        Returns whether the derived series changed."""
        parts: list[RankData] = [d for d in store.ranks.values()
                                 if any(n.startswith(SHARD_PREFIX) for n in d.columns)]
        if not parts:
            return False
        names = [n for d in parts for n in d.columns if n.startswith(SHARD_PREFIX)]
        names += [n for d in parts for n in d.columns if n == "nonfinite_grads" or n.startswith("grad_norm")]
        self._grow_inputs(list(dict.fromkeys(names)))
        all_final = store.exit is not None
        world = max((int(m["world_size"]) for m in store.meta.values() if isinstance(m.get("world_size"), int)),
                    default=0)
        new_steps, new_vals, new_mask = [], [], []
        watermark: float = math.inf
        reporting = {d.rank for d in parts}
        for d in parts:
            final = all_final or d.rank in store.ends
            # The newest row may still be continued by the next frame (a step split across two flushes).
            upto = d.axis.n if final else d.axis.n - 1
            r0 = self._done.get(d.rank, 0)
            if upto > r0:
                steps = d.axis.steps_at(np.arange(r0, upto))
                vals = np.zeros((upto - r0, len(self.inputs)))
                mask = np.zeros((upto - r0, len(self.inputs)), dtype=bool)
                for j, name in enumerate(self.inputs):
                    col = d.columns.get(name)
                    if col is None:
                        continue
                    v = col.values(r0, upto)
                    m = ~is_missing(v)
                    v = v.astype(np.float64)
                    # Norms (of what the probe did not shard) are combined as squares, like the shards' sums.
                    vals[:, j] = np.where(m, v * v if name.startswith("grad_norm") else v, 0.0)
                    mask[:, j] = m
                new_steps.append(steps)
                new_vals.append(vals)
                new_mask.append(mask)
                self._done[d.rank] = upto
            if not final and d.axis.last is not None:
                # Steps only grow per rank: whatever this rank still sends is at its newest step or after, so
                # every step before that one is complete as far as this rank goes.
                watermark = min(watermark, d.axis.last - 0.5)
        if not all_final and any(r not in reporting and r not in store.ends for r in range(world)):
            watermark = -math.inf  # a rank of the world has not reported shards yet: its share is still to come
        changed = False
        if new_steps:
            self._add(np.concatenate(new_steps), np.concatenate(new_vals), np.concatenate(new_mask))
        if math.isfinite(watermark):
            n_commit = int(np.searchsorted(self._p_steps, watermark, side="right"))
        else:
            n_commit = len(self._p_steps) if watermark > 0 else 0
        n_commit = max(n_commit, len(self._p_steps) - PENDING_MAX)
        if n_commit > 0:
            self._commit(n_commit)
            changed = True
        return changed

    def _add(self, steps: np.ndarray, vals: np.ndarray, mask: np.ndarray) -> None:
        last = self.data.axis.last
        if last is not None:
            late = steps <= last
            if late.any():
                self.late += int(mask[late].any(axis=1).sum())
                steps, vals, mask = steps[~late], vals[~late], mask[~late]
        if not len(steps):
            return
        union = np.union1d(self._p_steps, steps)
        k = len(self.inputs)
        s, c = np.zeros((len(union), k)), np.zeros((len(union), k), dtype=np.int64)
        old = np.searchsorted(union, self._p_steps)
        s[old], c[old] = self._p_sum, self._p_cnt
        at = np.searchsorted(union, steps)
        np.add.at(s, at, vals)
        np.add.at(c, at, mask.astype(np.int64))
        self._p_steps, self._p_sum, self._p_cnt = union, s, c

    def _commit(self, n: int) -> None:
        steps, sums, cnts = self._p_steps[:n], self._p_sum[:n], self._p_cnt[:n]
        self._p_steps, self._p_sum, self._p_cnt = self._p_steps[n:], self._p_sum[n:], self._p_cnt[n:]
        sq: dict[str, np.ndarray] = {}  # output name → sum of squares
        out: dict[str, np.ndarray] = {}
        reported: dict[str, np.ndarray] = {}  # output name → rows some rank reported a part of (measured)
        for j, name in enumerate(self.inputs):
            has = cnts[:, j] > 0
            if name.startswith(SHARD_PREFIX) or name.startswith("grad_norm"):
                if name.startswith(SHARD_PREFIX):
                    part = np.where(has, sums[:, j], 0.0)  # shards: their squares add up
                    targets = ["grad_norm/" + name[len(SHARD_PREFIX):], "grad_norm"]
                else:
                    # Not sharded, so the same on every rank (replicated): the ranks' mean, counted once.
                    part = np.where(has, sums[:, j] / np.maximum(cnts[:, j], 1), 0.0)
                    targets = [name]  # a published global norm covers the unsharded layers: added once
                for t in targets:
                    sq[t] = sq[t] + part if t in sq else part.copy()
                    reported[t] = reported[t] | has if t in reported else has.copy()
            elif name == "nonfinite_grads":
                out[name] = np.where(has, sums[:, j], np.nan)
                reported[name] = has
        for t, v in sq.items():
            with np.errstate(invalid="ignore"):
                out[t] = np.where(reported[t], np.sqrt(v), np.nan)
        d = self.data
        for name, v in out.items():
            measured = reported[name]
            col = d.columns.get(name)
            if col is None:
                if not measured.any():
                    continue
                col = d.columns[name] = Column(name)
                col.append_missing(d.axis.n)
            f32 = v.astype(np.float32)
            f32.view(np.uint32)[~measured] = MISSING_BITS
            col.append(f32)
            idx = np.flatnonzero(measured)
            if len(idx):
                col.last_value = float(v[idx[-1]])
                col.measured += len(idx)
                fin = idx[np.isfinite(v[idx])]
                col.nonfinite += len(idx) - len(fin)
                if len(fin):
                    col.last_finite = float(v[fin[-1]])
        for col in d.columns.values():
            if col.n < d.axis.n + n:
                col.append_missing(d.axis.n + n - col.n)
        d.axis.append(steps)
        d.version += 1
