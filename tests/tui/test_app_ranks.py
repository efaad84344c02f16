"""Runs with several ranks in the real app (Pilot over a QueueSource): all ranks together as a median line over a
min–max band, `r` cycling through the ranks, a sharded model's gradient norms combined across ranks (√Σ grad_sq),
and Parquet export from the live store and from a recording. Expected values are computed with numpy from the
very frames the app was fed."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource, ReplaySource
from accmon.tui.store import PENDING_MAX, RunStore
from accmon.tui.widgets import LayerHeatMap, LineChart
from tests.tui.test_app_fixtures import T0, facts, frame, meta, steps, write_recording

LAYERS = ["encoder.fc1", "encoder.fc2", "head"]


def rank_frames(n_ranks: int = 3, n_steps: int = 300, per_frame: int = 100, *, lag: int = 0) -> list[dict]:
    """A DDP-like run: every rank logs the same steps with its own loss (a per-rank scale and noise), and
    rank `n_ranks - 1` stops `lag` steps early (a slow rank)."""
    out = [meta(rank=r, world_size=n_ranks) for r in range(n_ranks)] + [facts()]
    for r in range(n_ranks):
        rng = np.random.default_rng(100 + r)
        last = n_steps - (lag if r == n_ranks - 1 else 0)
        for i, first in enumerate(range(0, last, per_frame)):
            f = steps(10 + i, first, min(per_frame, last - first), rank=r)
            k = len(f["steps"])
            f["cols"]["loss"] = (np.asarray(f["cols"]["loss"]) * (1 + 0.15 * r) + 0.05 * rng.normal(size=k)).tolist()
            f["cols"]["acc"] = np.clip(np.asarray(f["cols"]["acc"]) - 0.03 * r + 0.02 * rng.normal(size=k), 0,
                                       1).tolist()
            out.append(f)
    return out


def series_of(frames: list[dict], name: str) -> dict[int, dict[int, float]]:
    """rank → step → value of a series, straight from the frames."""
    out: dict[int, dict[int, float]] = {}
    for f in frames:
        if f["kind"] == "steps" and name in f["cols"]:
            for s, v in zip(f["steps"], f["cols"][name]):
                if v is not None:
                    out.setdefault(f["rank"], {})[s] = v
    return out


def live_app(frames: list[dict], **kw: Any) -> AccmonApp:
    src = QueueSource()
    src.push(*frames)
    app = AccmonApp(src, clock=lambda: T0 + 20.0, refresh_s=3600, **kw)
    app.animation_level = "none"
    return app


async def settle(app: AccmonApp, pilot: Any) -> None:
    app.sync_now()
    await pilot.pause()


def expected_columns(per_rank: dict[int, dict[int, float]], edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each chart column (steps [ceil(e[i]), ceil(e[i+1])), the last one up to floor(e[-1])): the median
    across ranks of each rank's mean, and the lowest and highest value of any rank. NaN where no steps."""
    n = len(edges) - 1
    med, lo, hi = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        a = math.ceil(edges[i])
        b = math.ceil(edges[i + 1]) if i < n - 1 else math.floor(edges[-1]) + 1
        vals = [[v for s, v in by_step.items() if a <= s < b] for by_step in per_rank.values()]
        vals = [np.asarray(v, dtype=np.float32).astype(np.float64) for v in vals if v]  # the store keeps float32
        if vals:
            med[i] = np.median([v.mean() for v in vals])
            lo[i] = min(v.min() for v in vals)
            hi[i] = max(v.max() for v in vals)
    return med, lo, hi


# -- the store, without an app ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_ranks", [2, 3, 4])
@pytest.mark.parametrize("columns", [300, 37])  # one step per column, and several
def test_group_buckets_are_the_median_and_spread_across_ranks(n_ranks, columns):
    frames = rank_frames(n_ranks, 300)
    store = RunStore()
    store.ingest(frames)
    group = store.all_ranks()
    from accmon.tui.widgets.plot import step_edges

    b = group.buckets("loss", lambda d: step_edges(d, 0.0, 299.0, columns, None))
    edges = 0.0 + 299.0 * np.arange(columns + 1) / columns
    med, lo, hi = expected_columns(series_of(frames, "loss"), edges)
    assert np.isfinite(med).sum() >= min(columns, 290)
    np.testing.assert_allclose(b.means, med, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(b.mins, lo, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(b.maxs, hi, rtol=1e-6, equal_nan=True)
    # The spread is real: the ranks differ, so the band is wider than any one rank's values.
    assert (b.maxs - b.mins > 0.01).mean() > 0.9


# -- the app ----------------------------------------------------------------------------------------------------
def test_all_ranks_draw_the_median_over_the_min_max_band():
    frames = rank_frames(3, 300)

    async def go():
        app = live_app(frames)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            assert app.rank is None
            await pilot.press("e")  # smoothing off: the line is the ranks' median itself
            await settle(app, pilot)
            chart = app.query_one("#chart-loss", LineChart)
            r = chart.rendered()
            drawn = r.series["train"]
            med, lo, hi = expected_columns(series_of(frames, "loss"), r.column_steps)
            assert np.isfinite(med).sum() > 50
            np.testing.assert_allclose(drawn["line"], med, rtol=1e-6, equal_nan=True)
            np.testing.assert_allclose(drawn["lo"], lo, rtol=1e-6, equal_nan=True)
            np.testing.assert_allclose(drawn["hi"], hi, rtol=1e-6, equal_nan=True)
            # The legend's value is the median of the ranks' newest losses.
            newest = [series_of(frames, "loss")[k][299] for k in range(3)]
            assert chart.border_title is not None and f"{np.median(newest):.4g}"[:5] in str(chart.border_title)
            # Smoothing on again: the line is the EMA of the median, still inside the band's range.
            await pilot.press("e")
            await settle(app, pilot)
            line = chart.rendered().series["train"]["line"]
            ok = np.isfinite(line)
            assert ok.sum() > 50 and not np.allclose(line[ok], med[ok])
            assert (line[ok] >= np.nanmin(lo) - 1e-9).all() and (line[ok] <= np.nanmax(hi) + 1e-9).all()

    asyncio.run(go())


def test_r_cycles_all_ranks_then_each_rank_then_all_again():
    frames = rank_frames(3, 300, lag=100)  # rank 2 is 100 steps behind

    async def go():
        app = live_app(frames)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            assert "ranks 0–2 median" in app.screen_text()
            assert app.view().x1 == 299  # all ranks: the newest step of any
            loss = series_of(frames, "loss")
            seen = []
            for expect in (0, 1, 2, None):
                await pilot.press("r")
                await settle(app, pilot)
                assert app.rank == expect
                text = app.screen_text()
                header = text.splitlines()[0]
                seen.append(header)
                chart = app.query_one("#chart-loss", LineChart).rendered()
                if expect is None:
                    assert "ranks 0–2 median" in header
                    continue
                assert f"rank {expect} of 0–2" in header and "median" not in header
                # One rank: what is drawn is that rank's own values (its min–max per column).
                per = {expect: loss[expect]}
                _, lo, hi = expected_columns(per, chart.column_steps)
                np.testing.assert_allclose(chart.series["train"]["lo"], lo, rtol=1e-6, equal_nan=True)
                np.testing.assert_allclose(chart.series["train"]["hi"], hi, rtol=1e-6, equal_nan=True)
                assert app.view().x1 == (199 if expect == 2 else 299)
                assert ("step 199" if expect == 2 else "step 299") in header
            assert len(set(seen)) == 4

    asyncio.run(go())


def test_one_rank_has_nothing_to_cycle_and_no_rank_words():
    async def go():
        app = live_app(rank_frames(1, 200))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("r")
            await settle(app, pilot)
            assert app.rank is None and "rank" not in app.screen_text().splitlines()[0]
            r = app.query_one("#chart-loss", LineChart).rendered()
            assert "line" in r.series["train"]  # smoothing on: the EMA over the faded raw span, as always
            await pilot.press("e")
            await settle(app, pilot)
            assert "line" not in app.query_one("#chart-loss", LineChart).rendered().series["train"]

    asyncio.run(go())


# -- sharded models (FSDP) --------------------------------------------------------------------------------------
def sharded_frames(n_ranks: int, n_steps: int, per_frame: int, sq: np.ndarray) -> list[dict]:
    """What FSDP ranks publish (tests/probe/test_torch_sharded.py): grad_sq/<layer> per rank, no grad_norm.
    sq: ranks × steps × layers."""
    out = [meta(rank=r, world_size=n_ranks) for r in range(n_ranks)] + [facts()]
    for i, first in enumerate(range(0, n_steps, per_frame)):
        for r in range(n_ranks):
            s = list(range(first, min(n_steps, first + per_frame)))
            cols = {"loss": [1.0 / (1 + x) for x in s], "nonfinite_grads": [float(r)] * len(s)}
            for j, layer in enumerate(LAYERS):
                cols[f"grad_sq/{layer}"] = sq[r, s[0]: s[-1] + 1, j].tolist()
            out.append(frame("steps", 10 + i, s[-1], rank=r, steps=s, times=[T0 + x * 0.01 for x in s], cols=cols))
    return out


def test_fsdp_layer_norms_are_the_root_of_the_ranks_summed_squares():
    rng = np.random.default_rng(7)
    sq = rng.uniform(1e-4, 4.0, size=(2, 250, len(LAYERS)))
    frames = sharded_frames(2, 250, 50, sq)
    ends = [frame("end", 99, 249, rank=r, status="finished", error=None, total_steps=250) for r in range(2)]

    async def go():
        app = live_app(frames + ends)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            await pilot.press("2")
            await settle(app, pilot)
            combined = app.store.sharded()
            assert combined is not None and combined.axis.n == 250
            for j, layer in enumerate(LAYERS):
                got = combined.columns[f"grad_norm/{layer}"].values().astype(np.float64)
                # The store keeps each rank's share as float32: the sum is exact to float32.
                want = np.sqrt(sq.astype(np.float32).astype(np.float64).sum(axis=0)[:, j])
                np.testing.assert_allclose(got, want, rtol=1e-6)
                assert not np.allclose(got, np.sqrt(sq[0, :, j]), rtol=1e-3)  # not one rank's partial norm
            glob = combined.columns["grad_norm"].values().astype(np.float64)
            np.testing.assert_allclose(glob, np.sqrt(sq.sum(axis=(0, 2))), rtol=1e-6)
            assert (combined.columns["nonfinite_grads"].values() == 1.0).all()  # 0 + 1: shards add up
            heat = app.query_one("#heat-grad", LayerHeatMap)
            hr = heat.rendered()
            assert hr.layers == LAYERS and "ranks combined" in str(heat.border_title)
            # Each cell is the largest combined norm of its steps (log10), from the √Σ series.
            cells = hr.values.shape[1]
            edges = 249.0 * np.arange(cells + 1) / cells
            norms = np.sqrt(sq.sum(axis=0))
            for c in range(cells):
                a = math.ceil(edges[c])
                b = math.ceil(edges[c + 1]) if c < cells - 1 else 250
                if b > a:
                    np.testing.assert_allclose(hr.values[:, c], np.log10(norms[a:b].max(axis=0)), rtol=1e-5)
            # The same combined norms whichever rank is shown: a rank's own are partial.
            await pilot.press("r")
            await settle(app, pilot)
            assert app.rank == 0
            np.testing.assert_array_equal(heat.rendered().values, hr.values)
            g2 = app.query_one("#chart-grad2", LineChart).rendered()
            assert np.nanmax(g2.series["global"]["hi"]) == pytest.approx(np.sqrt(sq.sum(axis=(0, 2))).max(),
                                                                         rel=1e-5)

    asyncio.run(go())


def test_a_step_waits_for_every_rank_share_then_is_combined():
    sq = np.full((2, 100, len(LAYERS)), 0.0)
    sq[0], sq[1] = 9.0, 16.0  # √(9 + 16) = 5 per layer once both ranks are in; 3 with rank 0 alone
    frames = sharded_frames(2, 100, 50, sq)
    store = RunStore()
    rank0 = [f for f in frames if f.get("rank", 0) == 0 or f["kind"] != "steps"]
    rank1 = [f for f in frames if f["kind"] == "steps" and f["rank"] == 1]
    store.ingest(rank0)
    assert store.sharded() is None  # rank 1 of the world has sent no share yet: nothing is complete
    store.ingest(rank1[:1])  # rank 1's steps 0–49
    combined = store.sharded()
    assert combined is not None and combined.axis.last == 48  # step 49 may still be continued by rank 1
    assert (combined.columns["grad_norm/head"].values() == 5.0).all()
    store.ingest(rank1[1:])
    store.ingest([frame("end", 99, 99, rank=r, status="finished", error=None, total_steps=100) for r in range(2)])
    assert combined.axis.n == 100 and (combined.columns["grad_norm/head"].values() == 5.0).all()
    assert store.shards is not None and store.shards.late == 0


def test_a_rank_that_never_catches_up_does_not_hold_the_norms_for_ever():
    n = PENDING_MAX + 500
    store = RunStore()
    store.ingest([meta(rank=r, world_size=2) for r in range(2)])
    store.ingest([frame("steps", 10, 1, rank=1, steps=[0, 1], cols={"grad_sq/head": [5.0, 5.0]})])  # then stalls
    chunk = 8192
    for i, first in enumerate(range(0, n, chunk)):
        s = list(range(first, min(n, first + chunk)))
        store.ingest([frame("steps", 10 + i, s[-1], rank=0, steps=s, cols={"grad_sq/head": [4.0] * len(s)})])
    combined = store.sharded()
    assert combined is not None and combined.axis.n == n - 1 - PENDING_MAX  # pending stays bounded (the newest row waits)
    v = combined.columns["grad_norm/head"].values()
    assert v[0] == 3.0 and (v[1:] == 2.0).all()  # step 0 had both shares; later steps only rank 0's
    store.ingest([frame("end", 99, n - 1, rank=r, status="crashed", error=None, total_steps=n) for r in range(2)])
    assert combined.axis.n == n and store.shards is not None and store.shards.late == 1  # rank 1's step 1


def test_layers_the_probe_did_not_shard_count_once_in_the_global_norm():
    """FSDP over part of the model: the unsharded layers' norms (and a global norm over them alone) are the same
    on every rank; the sharded layers' squares add up across ranks."""
    store = RunStore()
    store.ingest([meta(rank=r, world_size=2) for r in range(2)])
    for r, shard in ((0, 9.0), (1, 16.0)):
        store.ingest([frame("steps", 10, 9, rank=r, steps=list(range(10)),
                           cols={"grad_sq/body": [shard] * 10, "grad_norm/head": [12.0] * 10,
                                 "grad_norm": [12.0] * 10})])
    store.ingest([frame("end", 99, 9, rank=r, status="finished", error=None, total_steps=10) for r in range(2)])
    combined = store.sharded()
    assert combined is not None and combined.axis.n == 10
    assert (combined.columns["grad_norm/body"].values() == 5.0).all()  # √(9 + 16)
    assert (combined.columns["grad_norm/head"].values() == 12.0).all()  # replicated: once, not √2 × 12
    assert (combined.columns["grad_norm"].values() == 13.0).all()  # √(9 + 16 + 12²)


# -- Parquet export ---------------------------------------------------------------------------------------------
def test_parquet_key_exports_the_live_store_of_every_rank(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    frames = rank_frames(2, 300)

    async def go():
        app = live_app(frames, export_dir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("C")
            await app.workers.wait_for_complete()
            await pilot.pause()
            return app.notes

    notes = asyncio.run(go())
    (path,) = tmp_path.glob("*.parquet")
    assert any(str(path) in n for n in notes)
    table = pq.read_table(path)
    assert table.num_rows == 600 and table.column_names[:2] == ["rank", "step"]
    rank = np.asarray(table.column("rank"))
    step = np.asarray(table.column("step"))
    loss = np.asarray(table.column("loss"))
    for r, by_step in series_of(frames, "loss").items():
        sel = rank == r
        assert step[sel].tolist() == sorted(by_step)
        np.testing.assert_allclose(loss[sel], [by_step[s] for s in sorted(by_step)], rtol=1e-6)
    val = table.column("val_loss")
    assert val.null_count == 600 - 6  # measured every 100 steps: the rest are null, not NaN
    assert val.to_pylist()[99] == pytest.approx(series_of(frames, "val_loss")[0][99], rel=1e-6)


def test_parquet_key_exports_the_recording_exactly_in_replay(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    frames = rank_frames(2, 200) + [frame("end", 99, 199, rank=r, status="finished", error=None,
                                          total_steps=200) for r in range(2)]
    rec = write_recording(tmp_path / "run.accmon", frames)

    async def go():
        app = AccmonApp(ReplaySource(rec, rerun_rules=False), clock=lambda: T0, refresh_s=3600,
                        export_dir=tmp_path)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(200):
                if app.source.status.loaded:
                    break
                await asyncio.sleep(0.02)
            await settle(app, pilot)
            app.action_export_parquet()
            await app.workers.wait_for_complete()
            await pilot.pause()

    asyncio.run(go())
    (path,) = tmp_path.glob("*.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 400 and "time" in table.column_names  # the recording's own rows and times
    rows = table.to_pylist()
    by = {(row["rank"], row["step"]): row["loss"] for row in rows}
    for r, by_step in series_of(frames, "loss").items():
        assert all(by[(r, s)] == v for s, v in by_step.items())  # exact: float64 from the recording


def test_parquet_key_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch):
    import accmon.tui.export as export

    monkeypatch.setattr(export, "have_pyarrow", lambda: False)

    async def go():
        app = live_app(rank_frames(2, 100), export_dir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("C")
            await pilot.pause()
            return app.notes

    notes = asyncio.run(go())
    assert any("pip install pyarrow" in n for n in notes)
    assert not list(tmp_path.glob("*.parquet*"))


def test_the_palette_offers_parquet_export():
    async def go():
        app = live_app(rank_frames(1, 50))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Export series (Parquet)" in titles and "Export series (CSV)" in titles

    asyncio.run(go())
