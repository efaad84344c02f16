"""The ledger: statistics of finished steps, still on the device, until one transfer brings them all home.

A step's statistics are *parts*: a small device tensor plus the decoder that knows what its numbers mean
(and an optional host-side `meta`, such as an element count that the shape already told us). Nothing here
reads a tensor's value during a step. `Ledger.flush()` concatenates every pending part into one flat tensor
per device, copies it to the host once (into pinned memory with `non_blocking=True` and an event on CUDA),
and decodes it vectorised: rows whose parts have the same layout are decoded as one 2-D numpy block.

Decoders *accumulate*: a module called three times in one step (a shared ReLU), or a loss computed on four
micro-batches before one optimizer step, adds three or four parts to the row, and the decoder sums them
before `finish()` turns the sums into the published metrics.

A part can also be *deferred*: the row keeps the (small) tensors it is computed from, and the flush computes
it for every row at once (`Batched`). On a fast step three tiny kernels cost more than the step can spare;
one kernel over a few hundred steps' outputs costs almost nothing. A deferred part whose inputs were changed
in place since (a reused buffer) is dropped, and counted in `Ledger.stale`, rather than computed from
values that are no longer the step's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import report_once


class Sums:
    """Per-row accumulators for one flush: name → float64 array over the flushed rows, plus presence."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self._once: set[str] = set()

    def once(self, key: str) -> bool:
        """True the first time `key` is asked in this flush: for finishers that several decoders share."""
        if key in self._once:
            return False
        self._once.add(key)
        return True

    def add(self, name: str, rows: np.ndarray, vals: np.ndarray | float) -> None:
        arr = self.values.get(name)
        if arr is None:
            # Per-row scalars, or per-row vectors (class counts) when `vals` is 2-D.
            tail = np.shape(vals)[1:]
            arr = self.values[name] = np.zeros((self.n, *tail))
            self.present[name] = np.zeros(self.n, dtype=bool)
        arr[rows] += vals
        self.present[name][rows] = True

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        arr = self.values.get(name)
        return None if arr is None else (arr, self.present[name])


class Columns:
    """The published metrics of one flush, built as arrays and turned into lists with None where absent."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._vals: dict[str, np.ndarray] = {}
        self._mask: dict[str, np.ndarray] = {}
        self._ints: set[str] = set()
        self.hists: dict[str, np.ndarray] = {}
        self.lists: dict[str, list] = {}  # columns that are already Python lists (host-side scalars)

    def put(self, name: str, rows: np.ndarray | slice | int, vals: Any, *, integer: bool = False) -> None:
        arr = self._vals.get(name)
        if arr is None:
            arr = self._vals[name] = np.full(self.n, np.nan)
            self._mask[name] = np.zeros(self.n, dtype=bool)
        arr[rows] = vals
        self._mask[name][rows] = True
        if integer:
            self._ints.add(name)

    def put_where(self, name: str, vals: np.ndarray, mask: np.ndarray, *, integer: bool = False) -> None:
        """Set `name` at the rows where `mask` is true."""
        if mask.any():
            self.put(name, mask, vals[mask], integer=integer)

    def add_hist(self, name: str, counts: np.ndarray) -> None:
        old = self.hists.get(name)
        if old is None or old.shape != counts.shape:
            # A changed class count (a new head) restarts the histogram rather than mixing layouts.
            self.hists[name] = counts.astype(np.float64).copy()
        else:
            old += counts

    def as_lists(self) -> dict[str, list]:
        out: dict[str, list] = dict(self.lists)
        for name, arr in self._vals.items():
            mask = self._mask[name]
            if name in self._ints:
                vals = [int(v) if m and math.isfinite(v) else None for v, m in zip(arr.tolist(), mask.tolist())]
            elif mask.all():
                vals = arr.tolist()
            else:
                vals = [v if m else None for v, m in zip(arr.tolist(), mask.tolist())]
            out[name] = vals
        return out

    def hist_lists(self) -> dict[str, list]:
        return {k: [int(round(x)) for x in v.tolist()] for k, v in self.hists.items()}


class Decoder:
    """What the numbers of one kind of part mean. Subclasses add to `Sums` and, once per flush, finish."""

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        raise NotImplementedError

    def finish(self, sums: Sums, cols: Columns) -> None:
        """Turn what `decode` summed into metrics. Called once per flush per decoder that saw a part."""


class Batched:
    """How to compute one kind of deferred part for many rows in one go."""

    def compute(self, inputs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """One row of the result ([rows, width]) per entry of `inputs`, each the tensors one row deferred."""
        raise NotImplementedError


@dataclass
class Row:
    """One finished (or in-progress) training step."""

    step: int
    time: float = 0.0
    scalars: dict[str, Any] = field(default_factory=dict)
    parts: list[tuple[Decoder, torch.Tensor, Any]] = field(default_factory=list)
    # (decoder, batched, input tensors, their version counters when deferred)
    deferred: list[tuple[Decoder, Batched, tuple[torch.Tensor, ...], tuple[int, ...]]] = field(default_factory=list)
    held: int = 0  # bytes of the tensors `deferred` keeps alive

    def add(self, decoder: Decoder, tensor: torch.Tensor, meta: Any = None) -> None:
        self.parts.append((decoder, tensor, meta))

    def defer(self, decoder: Decoder, batched: Batched, inputs: tuple[torch.Tensor, ...], nbytes: int) -> None:
        """Add a part that the flush computes with `batched` from `inputs`, kept by reference until then
        (`nbytes`: their size, which the caller has weighed against what it may keep alive)."""
        self.deferred.append((decoder, batched, inputs, tuple([t._version for t in inputs])))
        self.held += nbytes


# Parts are gathered in chunks of one device, dtype and rank (0-d scalars are stacked, vectors
# concatenated): torch joins tensors of one dtype fast, and converts each chunk to float64 once. A
# placed part is (decoder, its chunk, width, meta, offset in the chunk); the chunk's base offset in its
# device's flat tensor is known once every chunk is complete.
Chunk = tuple[int, torch.dtype, bool]
Placed = tuple[Decoder, Chunk, int, Any, int]


class Transfer:
    """One flush in flight: the flat tensor(s) on their way to the host."""

    def __init__(self, rows: list[Row], layouts: list[list[Placed]], bases: dict[Chunk, tuple[int, int]],
                 flats: dict[int, torch.Tensor], pinned: dict[int, Any]) -> None:
        self.rows = rows
        self.layouts = layouts
        self.bases = bases
        self.flats = flats
        self.pinned = pinned  # device → (pinned host tensor, event) for CUDA, None for host-resident data
        self.started = time.perf_counter()

    def ready(self) -> bool:
        for entry in self.pinned.values():
            if entry is not None and not entry[1].query():
                return False
        return True

    def wait(self) -> None:
        # The host waits for the device here, at close only (or when a caller forces a flush).
        for entry in self.pinned.values():
            if entry is not None:
                entry[1].synchronize()

    def host_arrays(self) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for dev, flat in self.flats.items():
            entry = self.pinned.get(dev)
            host = entry[0] if entry is not None else flat
            # On CPU this is the one place the statistics are read; on CUDA the pinned copy has landed.
            out[dev] = host.numpy().copy() if entry is not None else host.numpy()
        return out


FlushSink = Callable[[list[int], dict[str, list], dict[str, list] | None, list[float]], None]


class Ledger:
    """Rows waiting for the host, and the transfer (at most one) on its way there."""

    def __init__(self, sink: FlushSink) -> None:
        self.sink = sink
        self.rows: list[Row] = []
        self.in_flight: Transfer | None = None
        self._pinned_cache: dict[torch.device, torch.Tensor] = {}
        self.flushes = 0
        self.held = 0  # bytes kept alive by the deferred parts of waiting rows
        self.stale = 0  # deferred parts dropped because their inputs changed in place before the flush

    # -- training-thread side: nothing here waits for the device --------------------------------------------
    def append(self, row: Row) -> None:
        self.rows.append(row)
        self.held += row.held

    def start_flush(self, keep_last: int = 0) -> bool:
        """Start moving all but the newest `keep_last` rows to the host. False when a transfer is still in flight."""
        if self.in_flight is not None:
            return False
        n = len(self.rows) - keep_last
        if n <= 0:
            return True
        rows, self.rows = self.rows[:n], self.rows[n:]
        self.in_flight = self._launch(rows)
        self.flushes += 1
        return True

    def poll(self) -> bool:
        """Decode and publish the transfer in flight if it has landed. Never waits."""
        tr = self.in_flight
        if tr is None or not tr.ready():
            return False
        self.in_flight = None
        self._publish(tr)
        return True

    def drain(self) -> None:
        """Publish everything now, waiting for the device if it must (run end, explicit flush)."""
        if self.in_flight is not None:
            tr, self.in_flight = self.in_flight, None
            tr.wait()
            self._publish(tr)
        if self.rows:
            rows, self.rows = self.rows, []
            tr = self._launch(rows)
            tr.wait()
            self._publish(tr)

    # -- internals ------------------------------------------------------------------------------------------
    def _resolve(self, rows: list[Row]) -> list[tuple[torch.Tensor, list[tuple[int, Decoder]]]]:
        """Compute the rows' deferred parts: one `Batched.compute` per kind and input layout. Each result is
        a [rows, width] block, with the (row index, decoder) that each of its rows belongs to."""
        groups: dict[tuple, tuple[Batched, list[tuple[int, Decoder, tuple[torch.Tensor, ...]]]]] = {}
        for i, row in enumerate(rows):
            if not row.deferred:
                continue
            for dec, batched, inputs, versions in row.deferred:
                key: tuple = (id(batched),)
                for t, v in zip(inputs, versions):
                    if t._version != v:
                        self.stale += 1
                        break
                    key += (t.shape, t.dtype, t.get_device())
                else:
                    groups.setdefault(key, (batched, []))[1].append((i, dec, inputs))
            self.held -= row.held
            row.deferred = []
            row.held = 0
        blocks = []
        for batched, items in groups.values():
            try:
                block = batched.compute([inputs for _, _, inputs in items])
            except Exception as exc:  # a bug here costs those parts, never the flush
                report_once("torch-deferred", f"could not compute deferred statistics ({exc!r}); some metrics will be missing")
                continue
            blocks.append((block, [(i, dec) for i, dec, _ in items]))
        return blocks

    def _launch(self, rows: list[Row]) -> Transfer:
        blocks = self._resolve(rows)
        chunks: dict[Chunk, list[torch.Tensor]] = {}
        sizes: dict[Chunk, int] = {}
        devices: dict[int, torch.device] = {}
        layouts: list[list[Placed]] = []

        def chunk(key: Chunk, t: torch.Tensor) -> list[torch.Tensor]:
            group = chunks.get(key)
            if group is None:
                group = chunks[key] = []
                sizes[key] = 0
                devices.setdefault(key[0], t.device)  # .device is slow: read once per chunk
            return group

        for row in rows:
            lay = []
            for dec, t, meta in row.parts:
                if t.is_meta:  # no values to bring home (a shape-only pass slipped through)
                    continue
                scalar = t.dim() == 0
                key = (t.get_device(), t.dtype, scalar)
                group = chunk(key, t)
                w = 1 if scalar else t.numel()
                group.append(t if scalar or t.dim() == 1 else t.reshape(-1))
                lay.append((dec, key, w, meta, sizes[key]))
                sizes[key] += w
            layouts.append(lay)
        for block, owners in blocks:
            key = (block.get_device(), block.dtype, False)
            group = chunk(key, block)
            w = block.shape[1] if block.dim() == 2 else 1
            base = sizes[key]
            group.append(block.reshape(-1))
            for j, (i, dec) in enumerate(owners):
                layouts[i].append((dec, key, w, None, base + j * w))
            sizes[key] += w * len(owners)
        flats: dict[int, torch.Tensor] = {}
        pinned: dict[int, Any] = {}
        bases: dict[Chunk, tuple[int, int]] = {}
        for dev_key, dev in devices.items():
            # float64 holds every count and float32 exactly; MPS has no float64.
            dtype = torch.float32 if dev.type == "mps" else torch.float64
            pieces = []
            at = 0
            for key, group in chunks.items():
                if key[0] != dev_key or not group:
                    continue
                joined = torch.stack(group) if key[2] else torch.cat(group)
                pieces.append(joined.to(dtype))
                bases[key] = (dev_key, at)
                at += sizes[key]
            flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0] if pieces else torch.empty(0, dtype=dtype, device=dev)
            flats[dev_key] = flat
            if dev.type == "cpu":
                pinned[dev_key] = None
            elif dev.type == "cuda":
                buf = self._pinned(dev, flat.numel(), dtype)
                buf.copy_(flat, non_blocking=True)
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(dev))
                pinned[dev_key] = (buf, event)
            else:
                # Other accelerators: an ordinary copy (it waits), once per flush.
                flats[dev_key] = flat.to("cpu")
                pinned[dev_key] = None
        return Transfer(rows, layouts, bases, flats, pinned)

    def _pinned(self, dev: torch.device, n: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._pinned_cache.get(dev)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            # Pinned allocations are slow (cudaHostAlloc): grow geometrically and reuse.
            size = max(n, 2 * (buf.numel() if buf is not None else 0), 4096)
            buf = torch.empty(size, dtype=dtype, pin_memory=True)
            self._pinned_cache[dev] = buf
        return buf[:n]

    def _publish(self, tr: Transfer) -> None:
        try:
            steps, cols, hists, times = decode_rows(tr.rows, tr.layouts, tr.bases, tr.host_arrays())
        except Exception as exc:  # a decoder bug must cost this flush, never the training run
            report_once("torch-decode", f"could not decode statistics ({exc!r}); some metrics will be missing")
            steps = [r.step for r in tr.rows]
            times = [r.time for r in tr.rows]
            cols = _scalar_columns(tr.rows).as_lists()
            hists = None
        if steps:
            self.sink(steps, cols, hists, times)


def _scalar_columns(rows: list[Row]) -> Columns:
    """Columns of the host-side scalars (lr, step_time, ...): plain lists, no numpy per value."""
    cols = Columns(len(rows))
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.scalars))
    for name in names:
        cols.lists[name] = [row.scalars.get(name) for row in rows]
    return cols


def decode_rows(rows: list[Row], layouts: list[list[Placed]], bases: dict[Chunk, tuple[int, int]],
                hosts: dict[int, np.ndarray]) -> tuple[list[int], dict[str, list], dict[str, list] | None, list[float]]:
    """Turn rows and the host copies of their parts into `log_columns` arguments."""
    n = len(rows)
    cols = _scalar_columns(rows)
    sums = Sums(n)
    # Group rows by layout: (decoder, chunk, width) of each part in order. Steps between samples share one
    # layout, sampled steps another: a flush decodes a handful of 2-D blocks, not thousands of rows.
    groups: dict[tuple, tuple[list[int], list[list[int]], list[list[Any]], list[Decoder]]] = {}
    for i, lay in enumerate(layouts):
        sig = []
        row_starts: list[int] = []
        row_metas: list[Any] = []
        for dec, key, w, meta, off in lay:
            sig.append((id(dec), key, w))
            row_starts.append(bases[key][1] + off)
            row_metas.append(meta)
        k = tuple(sig)
        g = groups.get(k)
        if g is None:
            g = groups[k] = ([], [], [], [p[0] for p in lay])
        g[0].append(i)
        g[1].append(row_starts)
        g[2].append(row_metas)
    seen: dict[int, Decoder] = {}
    for k, (row_idx, starts, metas, decoders) in groups.items():
        if not k:
            continue
        rows_arr = np.asarray(row_idx)
        start_arr = np.asarray(starts)  # rows × parts
        for j, (dec_id, key, w) in enumerate(k):
            idx = start_arr[:, j : j + 1] + np.arange(w)
            block = hosts[bases[key][0]][idx]
            decoders[j].decode(block, [m[j] for m in metas], rows_arr, sums)
            seen[dec_id] = decoders[j]
    for dec in seen.values():
        dec.finish(sums, cols)
    hists = cols.hist_lists() or None
    return [r.step for r in rows], cols.as_lists(), hists, [r.time for r in rows]
