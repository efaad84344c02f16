"""Keras and Lightning CSVLogger files, read row by row with the standard library's `csv`."""

from __future__ import annotations

import csv
import math
import os
from array import array

import numpy as np

from accmon.probe.metric_names import Mapping, map_tag

from .table import MAX_DEPTH, LogError, Series, Table, choose, run_name, to_array, union_steps


def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)  # also 'nan', 'inf', '-inf' as Python and pandas write them
    except ValueError:
        return None


# Steps beyond this cannot be a training step (and int64 holds them on the wire): such a row is skipped.
MAX_STEP = 2**53
# A CSV log's columns that accmon reads, at most (a viewer keeps at most 20,000 series of a rank); columns it
# does not read are never stored, and named in info["ignored"] up to MAX_IGNORED_NAMED, then counted in one
# entry. A hostile 3.9 MB header of 200,000 columns took 135 MB and 6.6 s to load (issue 16 item 9).
MAX_CSV_COLUMNS = 10_000
MAX_IGNORED_NAMED = 1_000


def load_csv(path: str) -> Table | None:
    if not os.path.isfile(path):
        raise LogError(f"{path}: not a regular file (a pipe or a device?): not read")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if not header:
                    return None
                header = [h.strip() for h in header]
                if "step" in header:
                    fmt, step_col, framework = "lightning-csv", header.index("step"), "lightning"
                elif header[0] == "epoch":
                    fmt, step_col, framework = "keras-csv", 0, "keras"
                else:
                    return None
                mtime = os.path.getmtime(path)
                # Only the columns accmon reads are stored: what map_tag leaves out is only ever named.
                mappings: dict[str, Mapping | str] = {}
                read: list[int] = []
                for i, h in enumerate(header):
                    if i == step_col:
                        continue
                    if h not in mappings:
                        mappings[h] = map_tag(h)
                    if isinstance(mappings[h], Mapping):
                        read.append(i)
                left_out, read = read[MAX_CSV_COLUMNS:], read[:MAX_CSV_COLUMNS]
                columns: dict[str, Series] = {}
                for i in read:
                    columns.setdefault(header[i], Series(header[i], array("q"), array("d"), array("d")))
                kept = [(i, columns[header[i]]) for i in read]
                # Row by row, never the whole file in lists of strings (a 59 MB file held 1.9 GB that way).
                for row in reader:
                    _add_csv_row(row, step_col, kept, mtime)
            except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a NUL byte...
                raise LogError(f"{path}: line {reader.line_num}: not a readable CSV log ({exc})") from None
    except UnicodeDecodeError:
        return None
    except OSError as exc:
        raise LogError(f"{path}: {exc.strerror or exc}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "metrics":  # Lightning: lightning_logs/version_3/metrics.csv
        name = run_name(path, os.path.dirname(os.path.abspath(path)))
    table = Table(fmt, os.path.abspath(path), name, framework=framework, times="file mtime")
    unread = [h for h, m in mappings.items() if not isinstance(m, Mapping)]
    for h in unread[:MAX_IGNORED_NAMED]:
        table.ignored[h] = str(mappings[h])
    if len(unread) > MAX_IGNORED_NAMED:
        table.ignored[f"{len(unread) - MAX_IGNORED_NAMED} more columns"] = "not metrics accmon reads (not all named)"
    if left_out:
        table.ignored[f"{header[left_out[0]]} and {len(left_out) - 1} columns after it"] = \
            f"over the {MAX_CSV_COLUMNS:,} columns read from a CSV log"
    candidates = []
    for h, s in columns.items():
        m = mappings[h]
        if not s.steps:
            table.ignored[h] = "no numeric values"
        elif isinstance(m, Mapping):
            candidates.append((h, m, s))
    choose(table, candidates)
    if fmt == "keras-csv" and "epoch" not in table.series:
        steps = union_steps(columns.values())
        table.series["epoch"] = Series("epoch", to_array("q", steps), to_array("d", steps.astype(np.float64)),
                                       to_array("d", np.full(len(steps), mtime)))
        table.mapped["epoch"] = "epoch"
    return table


def _add_csv_row(row: list[str], step_col: int, kept: list[tuple[int, Series]], mtime: float) -> None:
    """One row's values into the series of the columns read (`kept`: column index, its series)."""
    if not row:
        return
    step = _number(row[step_col]) if step_col < len(row) else None
    if step is None or not math.isfinite(step) or not 0 <= step < MAX_STEP:
        return  # a row with no step (or none a run can have) cannot be placed
    for i, s in kept:
        if i >= len(row):
            break  # columns are read in order
        v = _number(row[i])
        if v is None:
            continue
        s.steps.append(int(step))
        s.values.append(v)
        s.times.append(mtime)


def newest_csv(root: str) -> tuple[str | None, list[str]]:
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count(os.sep) - base >= MAX_DEPTH:
            dirnames[:] = []
        found += [os.path.join(dirpath, f) for f in filenames if f == "metrics.csv"]
    if not found:
        return None, []
    found.sort(key=lambda p: (os.path.getmtime(p), p))
    return found[-1], [os.path.relpath(p, root) for p in found[:-1]]
