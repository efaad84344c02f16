"""Several ranks of one run together: the median and spread across ranks (`RankGroup`), and the true gradient
norms of a sharded model from the ranks' partial sums of squares (`ShardCombiner`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import MISSING_BITS, Buckets, Column, is_missing
from .rank import RankData

if TYPE_CHECKING:
    from .run import RunStore


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
