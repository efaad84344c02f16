"""A log's table as accmon wire frames: meta, facts, steps, end."""

from __future__ import annotations

import hashlib
import math
import os
import time
from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np

from accmon.probe import __version__, wire

from .table import Series, Table, sorted_unique, union_steps

# As many steps per frame as the probe's I/O thread puts in one (probe/ioframes.py MAX_STEPS_PER_FRAME).
STEPS_PER_FRAME = 2048


def _epoch_numbers(s: Series) -> None:
    """Hugging Face logs the epoch as progress (0.33, 1.0, 1.5): make it the 0-based epoch in progress."""
    if any(v != int(v) for v in s.values if math.isfinite(v)):
        s.values = [float(max(math.ceil(v) - 1, 0)) if math.isfinite(v) else v for v in s.values]


def frames(table: Table) -> Iterator[dict[str, Any]]:
    """The table as wire frames: meta, facts, steps (STEPS_PER_FRAME at most each), end."""
    if "epoch" in table.series:
        _epoch_numbers(table.series["epoch"])
    # Columnar, in numpy: a dict per step held ~2 GB for a 59 MB CSV (issue 16).
    names = sorted(table.series)
    arrays = {}
    for name in names:
        s = table.series[name]
        st = np.asarray(s.steps, dtype=np.int64)
        keep = st >= 0
        ts = (np.asarray(s.times, dtype=np.float64) if isinstance(s.times, array)
              else np.array([np.nan if t is None else t for t in s.times], dtype=np.float64))
        arrays[name] = (st[keep], np.asarray(s.values, dtype=np.float64)[keep], ts[keep])
    parts = [a[0] for a in arrays.values()]
    all_steps = sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    n = len(all_steps)
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    step_time = np.full(n, -np.inf)
    for name, (st, vals, ts) in arrays.items():
        idx = np.searchsorted(all_steps, st)
        col, has = np.full(n, np.nan), np.zeros(n, dtype=bool)
        col[idx] = vals  # a tag logged twice at one step: the later value stands
        has[idx] = True
        columns[name] = (col, has)
        np.fmax.at(step_time, idx, ts)
    fallback = os.path.getmtime(table.path) if os.path.exists(table.path) else time.time()
    # Kept in numpy and made lists one frame at a time: a list of every step and one of every time cost ~70 bytes
    # a step more (issue 16 item 9).
    times = np.where(np.isfinite(step_time), step_time, fallback)
    run_id = "import-" + hashlib.sha1(table.path.encode()).hexdigest()[:8]
    started = float(times.min()) if n else fallback
    seq = 0

    def frame(kind: str, step: int, t: float, **body: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        f = wire.envelope(kind, run_id, 0, seq, step, **body)
        f["t"] = t
        return f

    yield frame("meta", -1, started, name=table.name, host=None, pid=None, cmd=[], started=started,
                world_size=1, probe=__version__, source={"format": table.fmt, "path": table.path})
    facts: dict[str, Any] = {"source": {"format": table.fmt, "path": table.path, "tags": dict(table.mapped),
                                        "times": table.times}}
    if table.framework:
        facts["framework"] = table.framework
    yield frame("facts", -1, started, facts=facts)
    for i in range(0, n, STEPS_PER_FRAME):
        chunk: list[int] = all_steps[i:i + STEPS_PER_FRAME].tolist()
        chunk_times: list[float] = times[i:i + len(chunk)].tolist()
        cols: dict[str, list] = {}
        for name in names:
            col, has = columns[name]
            present = has[i:i + len(chunk)]
            if not present.any():
                continue
            values: list = col[i:i + len(chunk)].tolist()
            for k in np.flatnonzero(~present).tolist():
                values[k] = None
            if name == "epoch":
                values = [int(v) if v is not None and math.isfinite(v) else v for v in values]
            cols[name] = values
        yield frame("steps", chunk[-1], chunk_times[-1], steps=chunk, times=chunk_times, cols=cols)
    last = int(all_steps[-1]) if n else -1
    yield frame("end", last, float(times[-1]) if n else started, status="finished", error=None, total_steps=n)


def info(table: Table) -> dict[str, Any]:
    """What `load_log` found, for the command to show: format, run name, tags used and not, other runs."""
    return {"format": table.fmt, "path": table.path, "name": table.name, "framework": table.framework,
            "mapped": dict(table.mapped), "ignored": dict(table.ignored), "others": list(table.others),
            "times": table.times, "steps": _distinct_steps(table)}


def _distinct_steps(table: Table) -> int:
    """How many steps the table holds."""
    return int(np.count_nonzero(union_steps(table.series.values()) >= 0))
