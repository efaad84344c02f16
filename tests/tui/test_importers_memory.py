"""What a CSV log costs to read, against its size (issue 16 item 9: a 59 MB CSV held 1.9 GB in `list(reader)`).

The bounds are ratios of peak traced memory (tracemalloc: every Python and numpy allocation) to the file's size,
with room to spare over today's figures (~5x to load, ~9x to make its frames, on CPython 3.11): the rows held as
lists of strings (`list(reader)`) cost ~16x to load, and a dict per step ~25x to make frames. No timings.
"""

from __future__ import annotations

import csv
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from accmon.tui import importers

ROWS = 100_000
LOAD_BOUND = 10  # × the file's size
FRAMES_BOUND = 14


def metrics_csv(path: Path, rows: int = ROWS) -> int:
    """A Lightning CSVLogger file: step and three metrics a row, ~24 bytes a row. Its size."""
    with open(path, "w") as fh:
        fh.write("step,loss,acc,lr\n")
        for i in range(rows):
            fh.write(f"{i},0.{i % 997},0.{i % 991},0.001\n")
    return os.path.getsize(path)


def traced_peak(fn, *args):  # type: ignore[no-untyped-def]
    """fn(*args) and the peak of memory traced while it ran, above what was traced before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_csv_log_is_read_in_memory_proportional_to_a_few_times_its_size(tmp_path: Path) -> None:
    size = metrics_csv(tmp_path / "metrics.csv")
    got, load_peak = traced_peak(importers.load_log, str(tmp_path / "metrics.csv"))
    assert got is not None
    found, frames = got
    assert found["steps"] == ROWS
    assert load_peak < LOAD_BOUND * size, f"loading took {load_peak / size:.1f}x the file's {size} bytes"

    def every_step(frames: Iterator[dict]) -> int:
        return sum(len(f["steps"]) for f in frames if f["kind"] == "steps")

    n, frames_peak = traced_peak(every_step, frames)
    assert n == ROWS
    assert frames_peak < FRAMES_BOUND * size, f"making frames took {frames_peak / size:.1f}x the file's {size} bytes"


def test_the_bound_catches_rows_held_as_lists_of_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check above is worth something only if the old way fails it: every row read first (`list(reader)`).
    size = metrics_csv(tmp_path / "metrics.csv")
    streaming = csv.reader

    def whole_file(f):  # type: ignore[no-untyped-def]
        return iter(list(streaming(f)))

    monkeypatch.setattr(importers.csvlog.csv, "reader", whole_file)
    got, load_peak = traced_peak(importers.load_log, str(tmp_path / "metrics.csv"))
    assert got is not None and got[0]["steps"] == ROWS
    assert load_peak > LOAD_BOUND * size, f"list(reader) took only {load_peak / size:.1f}x the file's size"


def test_only_the_columns_accmon_reads_are_stored_and_at_most_so_many(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers.csvlog, "MAX_CSV_COLUMNS", 2)
    monkeypatch.setattr(importers.csvlog, "MAX_IGNORED_NAMED", 1)
    p = tmp_path / "metrics.csv"
    p.write_text("step,custom0,loss,custom1,accuracy,lr,custom2\n0,1,0.5,1,0.25,0.1,1\n1,1,0.4,1,0.5,0.1,1\n")
    got = importers.read_all(str(p))
    assert got is not None
    found, frames = got
    assert sorted(found["mapped"].values()) == ["acc", "loss"]
    # Columns accmon does not read: the first named with its reason, the others counted.
    assert "custom0" in found["ignored"] and "2 more columns" in found["ignored"]
    assert "custom1" not in found["ignored"]
    # Past the cap, what accmon would read is left out and said.
    assert "over the 2 columns" in found["ignored"]["lr and 0 columns after it"]
    cols = {name for f in frames if f["kind"] == "steps" for name in f["cols"]}
    assert cols == {"loss", "acc"}


def test_a_header_of_many_columns_costs_no_more_than_a_few_times_its_size(tmp_path: Path) -> None:
    # 50,000 columns accmon does not read, then the loss: nothing is stored for the first (a Series each held
    # ~35x the file's size before issue 16), and the loss is still found.
    p = tmp_path / "metrics.csv"
    with open(p, "w") as fh:
        fh.write("step," + ",".join(f"c{i}" for i in range(50_000)) + ",loss\n")
        for r in range(3):
            fh.write(f"{r}," + ",".join("1.0" for _ in range(50_000)) + ",0.5\n")
    size = os.path.getsize(p)
    got, peak = traced_peak(importers.load_log, str(p))
    assert got is not None and got[0]["mapped"] == {"loss": "loss"}
    assert len(got[0]["ignored"]) == importers.csvlog.MAX_IGNORED_NAMED + 1
    assert peak < 20 * size, f"loading took {peak / size:.1f}x the file's {size} bytes"


def test_distinct_steps_are_numpys_unique() -> None:
    rng = np.random.default_rng(16)
    for n in (0, 1, 2, 5, 1000):
        for a in (rng.integers(-5, 50, n), np.sort(rng.integers(0, 2**62, n)), np.arange(n), np.zeros(n, np.int64)):
            a = a.astype(np.int64)
            assert np.array_equal(importers.table.sorted_unique(a), np.unique(a))
