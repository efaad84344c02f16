"""A rank's series as columns (packed chunks, block summaries, buckets) and the step axis they share: numpy
that any chart can decimate to its width.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

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
