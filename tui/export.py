"""Series out of accmon: CSV (always) and Parquet (when pyarrow is installed), from a recording or the live store.

One row per (rank, step), one column per metric; an empty cell is "not measured", `nan`/`inf`/`-inf` are real
values (pandas and numpy read them back as such). From a recording the values are the recorded ones, exactly;
from the live store, steps older than the newest 32 k per rank come from its 16-bit sealed chunks (see
store.py) — export the recording when the last digits matter.
"""

from __future__ import annotations

import csv as csv_mod
import importlib.util
import math
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import numpy as np

from accmon.probe.recording import RecordingError, RecordingReader

from .store import RunStore, is_missing

KEY_COLUMNS = ["rank", "step", "time"]
PARQUET_HINT = "needs pyarrow: pip install pyarrow (CSV works without it: c)"
STORE_BATCH = 1 << 15  # rows per rank read at a time: export memory stays flat however long the run


def have_pyarrow() -> bool:
    """Whether Parquet export can run (pyarrow is optional: a training node or a slim viewer need not have it)."""
    return importlib.util.find_spec("pyarrow") is not None


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def _rows(frames: Iterable[dict[str, Any]]) -> Iterator[tuple[int, int, float | None, dict[str, Any]]]:
    """(rank, step, time, values) per step, a step continued across two frames merged into one row."""
    pending: dict[int, tuple[int, float | None, dict[str, Any]]] = {}
    for frame in frames:
        if frame.get("kind") != "steps":
            continue
        rank = frame["rank"]
        times = frame.get("times") or []
        cols = frame.get("cols") or {}
        for i, step in enumerate(frame["steps"]):
            values = {name: col[i] for name, col in cols.items() if col[i] is not None}
            t = times[i] if i < len(times) else None
            held = pending.get(rank)
            if held is not None and held[0] == step:
                held[2].update(values)
                continue
            if held is not None:
                yield rank, held[0], held[1], held[2]
            pending[rank] = (step, t, values)
    for rank, (step, t, values) in pending.items():
        yield rank, step, t, values


def _metric_names(frames: Iterable[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for frame in frames:
        if frame.get("kind") == "steps":
            names.update(dict.fromkeys(frame.get("cols") or {}))
    return sorted(names)


def write_csv(frames_twice: Any, out: TextIO) -> int:
    """Write CSV from a callable giving the frames (called twice: names first, then rows). Returns rows."""
    names = _metric_names(frames_twice())
    w = csv_mod.writer(out, lineterminator="\n")
    w.writerow(KEY_COLUMNS + names)
    n = 0
    for rank, step, t, values in _rows(frames_twice()):
        w.writerow([rank, step, _cell(t)] + [_cell(values.get(name)) for name in names])
        n += 1
    return n


def write_parquet(frames_twice: Any, path: str) -> int:
    # pyarrow: optional, and heavy to import (~0.1 s): only when Parquet is written.
    import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]

    names = _metric_names(frames_twice())
    ranks: list[int] = []
    steps: list[int] = []
    times: list[float | None] = []
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for rank, step, t, values in _rows(frames_twice()):
        ranks.append(rank)
        steps.append(step)
        times.append(t)
        for n in names:
            v = values.get(n)
            cols[n].append(float(v) if v is not None else None)
    table = pa.table({"rank": pa.array(ranks, pa.int32()), "step": pa.array(steps, pa.int64()),
                      "time": pa.array(times, pa.float64()),
                      **{n: pa.array(v, pa.float64()) for n, v in cols.items()}})
    pq.write_table(table, path)
    return len(steps)


def export_recording(path: str, *, csv: str | None = None, parquet: str | None = None, quiet: bool = False,
                     err: TextIO = sys.stderr) -> int:
    """`accmon export FILE --csv OUT [--parquet OUT]`. Exit 0 written, 2 unreadable input or missing pyarrow."""
    try:
        reader = RecordingReader(path)
    except RecordingError as exc:
        err.write(f"accmon export: {exc}\n")
        return 2

    def frames() -> Iterator[dict[str, Any]]:
        return reader.frames()

    if parquet:
        try:
            import pyarrow  # noqa: F401  # type: ignore[import-not-found]
        except ImportError:
            err.write("accmon export: --parquet needs pyarrow (pip install pyarrow); --csv works without it\n")
            return 2
    try:
        if csv:
            with _open_out(csv) as fh:
                n = write_csv(frames, fh)
            if not quiet:
                err.write(f"accmon export: {n} rows to {csv}\n")
        if parquet:
            n = write_parquet(frames, parquet)
            if not quiet:
                err.write(f"accmon export: {n} rows to {parquet}\n")
    except OSError as exc:
        err.write(f"accmon export: {exc.filename or ''}: {exc.strerror or exc}\n")
        return 2
    if reader.problems and not quiet:
        err.write(f"accmon export: the recording is damaged; exported what could be read ({reader.problems[0]})\n")
    return 0


def _open_out(path: str) -> Any:  # a context manager giving a TextIO
    if path == "-":
        return _Stdout()
    return open(path, "w", newline="", encoding="utf-8")


class _Stdout:
    def __enter__(self) -> TextIO:
        return sys.stdout

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()


def export_store(store: RunStore, path: str) -> int:
    """The live store's series as CSV (see the module docstring on precision). Returns rows written."""
    names = sorted({n for d in store.ranks.values() for n in d.columns})
    n = 0
    tmp = path + ".part"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv_mod.writer(fh, lineterminator="\n")
        w.writerow(["rank", "step"] + names)
        for rank in sorted(store.ranks):
            data = store.ranks[rank]
            chunk = 1 << 15
            for r0 in range(0, data.axis.n, chunk):
                r1 = min(data.axis.n, r0 + chunk)
                steps = data.axis.steps_at(np.arange(r0, r1))
                cols: list[Any] = []
                for name in names:
                    col = data.columns.get(name)
                    if col is None:
                        cols.append(None)
                        continue
                    v = col.values(r0, r1)
                    cols.append((v.astype(np.float64).tolist(), is_missing(v).tolist()))
                for i, step in enumerate(steps.tolist()):
                    row = [rank, step]
                    for c in cols:
                        row.append("" if c is None or c[1][i] else _cell(c[0][i]))
                    w.writerow(row)
                    n += 1
    os.replace(tmp, path)
    return n


def export_store_parquet(store: RunStore, path: str) -> int:
    """The live store's series as Parquet: `rank` (int32), `step` (int64), then one float64 column per metric,
    null where not measured (NaN and ±Inf are values). Same rows and precision as `export_store` (CSV).
    Written batch by batch to `path.part`, then renamed: a reader never sees half a file. Returns rows written.
    Raises ImportError without pyarrow (`have_pyarrow()` tells first)."""
    # pyarrow: optional, and heavy to import (~0.1 s): only when Parquet is written.
    import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]

    names = sorted({n for d in store.ranks.values() for n in d.columns})
    schema = pa.schema([("rank", pa.int32()), ("step", pa.int64())] + [(n, pa.float64()) for n in names])
    n = 0
    tmp = path + ".part"
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for rank in sorted(store.ranks):
                data = store.ranks[rank]
                for r0 in range(0, data.axis.n, STORE_BATCH):
                    r1 = min(data.axis.n, r0 + STORE_BATCH)
                    m = r1 - r0
                    arrays = [pa.array(np.full(m, rank, dtype=np.int32)),
                              pa.array(data.axis.steps_at(np.arange(r0, r1)))]
                    for name in names:
                        col = data.columns.get(name)
                        if col is None:
                            arrays.append(pa.nulls(m, pa.float64()))
                            continue
                        v = col.values(r0, r1)
                        # Columnar, no Python loop per value: "not measured" becomes null, NaN stays NaN.
                        arrays.append(pa.array(v.astype(np.float64), mask=is_missing(v)))
                    writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                    n += m
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n
