"""Series export: CSV from a recording (exact values, NaN kept, missing left empty), the CLI, Parquet."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import sys

import pytest

from accmon.tui.export import export_recording, export_store, write_csv
from accmon.tui.store import RunStore
from tests.conftest import run_accmon
from tests.tui.test_app_fixtures import frame, meta, run_frames, write_recording


def test_csv_has_one_row_per_step_with_nan_and_missing_told_apart(tmp_path):
    frames = [
        meta(),
        frame("steps", 2, 1, steps=[0, 1], times=[10.0, 11.0], cols={"loss": [1.5, math.nan], "val_loss": [None, 2.0]}),
        # step 1 continues in the next frame (a partial step): one row, both values
        frame("steps", 3, 2, steps=[1, 2], times=[11.0, 12.0], cols={"acc": [0.5, 0.75], "loss": [None, math.inf]}),
        frame("steps", 4, 1, rank=1, steps=[0], times=[10.0], cols={"loss": [9.0]}),
    ]
    out = io.StringIO()
    n = write_csv(lambda: iter(frames), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["rank", "step", "time", "acc", "loss", "val_loss"]
    assert n == 4 and rows[1:] == [
        ["0", "0", "10.0", "", "1.5", ""],
        ["0", "1", "11.0", "0.5", "nan", "2.0"],
        ["0", "2", "12.0", "0.75", "inf", ""],
        ["1", "0", "10.0", "", "9.0", ""],
    ]


def test_the_export_command_writes_csv_from_a_recording(tmp_path):
    rec = write_recording(tmp_path / "run.accmon", run_frames(600))
    out = tmp_path / "series.csv"
    done = run_accmon("export", rec, "--csv", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 600 and float(rows[10]["loss"]) > float(rows[500]["loss"])
    assert rows[99]["val_loss"] != "" and rows[98]["val_loss"] == ""  # measured every 100 steps only


def test_export_refuses_what_is_not_a_recording(tmp_path):
    bad = tmp_path / "x.accmon"
    bad.write_bytes(b"not a recording")
    err = io.StringIO()
    assert export_recording(str(bad), csv=str(tmp_path / "o.csv"), err=err) == 2
    assert "not an accmon recording" in err.getvalue()


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` meets where it is not installed
    rec = write_recording(tmp_path / "run.accmon", run_frames(100))
    err = io.StringIO()
    assert export_recording(rec, parquet=str(tmp_path / "o.parquet"), err=err) == 2
    assert "pip install pyarrow" in err.getvalue()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_parquet_round_trip(tmp_path):
    import pyarrow.parquet as pq

    rec = write_recording(tmp_path / "run.accmon", run_frames(300))
    assert export_recording(rec, parquet=str(tmp_path / "o.parquet"), quiet=True) == 0
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.num_rows == 300 and "loss" in table.column_names


def test_live_store_export_matches_the_frames(tmp_path):
    store = RunStore()
    store.ingest(run_frames(700, ended=None))
    path = tmp_path / "live.csv"
    assert export_store(store, str(path)) == 700
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["step"] == "0" and rows[-1]["step"] == "699"
    assert float(rows[5]["loss"]) == pytest.approx(run_frames(700)[2]["cols"]["loss"][5], rel=1e-6)
    assert rows[5]["val_loss"] == "" and rows[99]["val_loss"] != ""


def test_a_second_screenshot_of_a_finished_run_does_not_overwrite_the_first(tmp_path):
    # Issue 21 item 12: the name holds the step, and a finished run stays at one step.
    import asyncio

    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import ReplaySource
    from tests.tui.test_app_fixtures import run_frames, write_recording

    path = write_recording(tmp_path / "run.accmon", run_frames(300))

    async def go():
        app = AccmonApp(ReplaySource(path, rerun_rules=False), export_dir=tmp_path, refresh_s=3600)
        app.animation_level = "none"
        async with app.run_test(size=(80, 24)) as pilot:
            while not (app.source.status.loaded and not app.source._q.q):
                app.sync_now()
                await pilot.pause()
            app.sync_now()
            await pilot.press("x", "x")
            await app.workers.wait_for_complete()

    asyncio.run(go())
    shots = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".svg")
    assert shots == ["accmon-mnist-mlp-step299-2.svg", "accmon-mnist-mlp-step299.svg"]
