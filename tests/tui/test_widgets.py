"""Widgets rendered without an app: what the line API draws for given data and view."""

from __future__ import annotations

import math

import numpy as np
import pytest

from accmon.tui.store import Column, RunStore
from accmon.tui.widgets import (
    ChartSpec,
    HeaderInfo,
    HeatSpec,
    SeriesSpec,
    TimelineState,
    View,
    alert_detail,
    header_text,
    render_chart,
    render_heatmap,
    render_timeline,
    summary_text,
)
from accmon.tui.widgets.chart import LABEL_W
from accmon.tui.widgets.plot import ema
from tests.tui.test_app_fixtures import LAYERS, alert, end, facts, meta, run_frames, steps

LOSS = ChartSpec("loss", (SeriesSpec("loss", "train", 0), SeriesSpec("val_loss", "val", 1)))


def plot_area(rendered, width):
    """The braille part of each plot row (without the y labels and the axis rows)."""
    return [line.text[LABEL_W + 1 : width] for line in rendered.lines[:-2]]


def lit_columns(rows):
    return {c for row in rows for c, ch in enumerate(row) if ch not in " ✕"}


def big_store(n: int, spike_at: int) -> RunStore:
    store = RunStore()
    data = store.rank(0)
    data.axis.append(np.arange(n, dtype=np.int64))
    col = data.columns["loss"] = Column("loss")
    v = np.full(n, 1.0, dtype=np.float32)
    v[spike_at] = 50.0  # one step in a million
    col.append(v)
    col.last_value = 1.0
    data.version += 1
    return store


def test_a_single_spike_in_a_million_steps_still_shows():
    store = big_store(1_000_000, spike_at=654_321)
    spec = ChartSpec("loss", (SeriesSpec("loss", "train", 0),))
    r = render_chart(store.rank(0), spec, View(0, 999_999, ema=False), 100, 20)
    rows = plot_area(r, 100)
    top = rows[0]  # the spike reaches the top row, in the column that covers step 654,321
    pw = 100 - LABEL_W - 1
    col = int(654_321 / 999_999 * pw)
    assert top[col].strip() and top[col] != " "
    assert sum(ch.strip() != "" for ch in top) <= 2  # nowhere else


def test_train_and_val_draw_with_the_sparse_val_series_joined():
    store = RunStore()
    store.ingest(run_frames(1500, ended=None))
    r = render_chart(store.rank(0), LOSS, View(0, 1499, ema=False), 80, 16)
    assert r.dots["train"] > 100 and r.dots["val"] > 100  # val measured every 100 steps, drawn as one line
    assert "train" in r.legend.plain and "val" in r.legend.plain
    lo, hi = r.y_range
    assert lo < 0.2 and hi > 2.0


def test_smoothing_draws_a_steadier_line_than_the_raw_values():
    noisy = np.random.default_rng(0).normal(1.0, 0.5, 4000)
    means, counts = noisy, np.ones(4000, dtype=np.int64)
    assert np.nanstd(ema(means, counts, 0.99)[500:]) < 0.2 * np.std(noisy)
    assert ema(np.array([5.0, np.nan, 1.0]), np.array([1, 0, 1]), 0.5)[0] == 5.0  # debiased: starts at the value


def test_nan_values_are_marked_and_alerts_sit_on_the_time_axis():
    store = RunStore()
    store.ingest(run_frames(1500, nan_at=1200, ended=None))
    view = View(0, 1499, ema=False, markers=((400, "warning"), (1000, "critical")))
    r = render_chart(store.rank(0), LOSS, view, 80, 16)
    pw = 80 - LABEL_W - 1
    top = r.lines[0].text[LABEL_W + 1 :]
    assert top[int(1200 / 1499 * pw)] == "✕"
    axis = r.lines[-2].text[LABEL_W + 1 :]
    assert [c for c, ch in enumerate(axis) if ch == "▲"] == [int(400 / 1499 * pw), int(1000 / 1499 * pw)]
    assert "1,000" in r.lines[-1].text  # step labels


def test_the_replay_head_hides_what_comes_after_it():
    store = RunStore()
    store.ingest(run_frames(1500, ended=None))
    spec = ChartSpec("loss", (SeriesSpec("loss", "train", 0),))
    full = lit_columns(plot_area(render_chart(store.rank(0), spec, View(0, 1499, ema=False), 80, 12), 80))
    half = lit_columns(plot_area(render_chart(store.rank(0), spec, View(0, 1499, ema=False, head=750), 80, 12), 80))
    pw = 80 - LABEL_W - 1
    assert max(full) == pw - 1 and max(half) <= pw // 2 + 1


def test_log_scale_ticks_are_whole_decades():
    store = RunStore()
    store.ingest(run_frames(600, vanishing=True, ended=None))
    spec = ChartSpec("g", tuple(SeriesSpec(f"grad_norm/{n}", n, i) for i, n in enumerate(LAYERS)), log=True)
    r = render_chart(store.rank(0), spec, View(0, 599, ema=False), 80, 20)
    labels = [line.text[:LABEL_W].strip() for line in r.lines[:-2] if line.text[:LABEL_W].strip()]
    assert labels and all(lab.startswith(("1.0e", "1", "0.1", "0.01")) for lab in labels), labels


def test_an_empty_chart_says_what_it_waits_for():
    r = render_chart(RunStore().rank(0), LOSS, View(), 60, 10)
    assert any("no loss logged so far" in line.text for line in r.lines)


def test_heat_map_shows_vanishing_layers_in_model_order():
    store = RunStore()
    store.ingest([meta(), facts()] + run_frames(600, vanishing=True, ended=None)[2:])
    spec = HeatSpec("grads", "grad_norm/")
    r = render_heatmap(store.rank(0), spec, View(0, 599), 70, LAYERS)
    assert r.layers == LAYERS
    first, last = r.values[0], r.values[-1]
    assert np.nanmax(first) < -8 and np.nanmin(last) > -4  # log10 of the norms, per cell
    first_colour = [s.style.bgcolor for s in r.lines[0]._segments if s.style and s.style.bgcolor][0]
    last_colour = [s.style.bgcolor for s in r.lines[-1]._segments if s.style and s.style.bgcolor][0]
    assert first_colour != last_colour
    assert r.lines[0].text.rstrip().endswith("1.0e-9") or "e-9" in r.lines[0].text


def test_heat_map_marks_nan_cells():
    store = RunStore()
    frames = run_frames(600, ended=None)
    frames[3]["cols"]["grad_norm/head"][10] = math.nan
    store.ingest(frames)
    r = render_heatmap(store.rank(0), HeatSpec("grads", "grad_norm/"), View(0, 599), 70, LAYERS)
    assert "✕" in r.lines[LAYERS.index("head")].text
    assert "✕" not in r.lines[0].text


def test_header_says_state_step_speed_and_trouble():
    store = RunStore()
    store.ingest(run_frames(1500, ended=None))
    text = header_text(store, HeaderInfo(state="live", dropped_live=12, now=store.rank(0).last_t)).plain
    assert "live" in text and "mnist-mlp" in text and "gpu-node-7:4242" in text and "1,499" in text
    assert "steps/s" in text and "12 live frames dropped" in text and "2 alerts" in text and "epoch 2" in text
    store.ingest([end(99, 1499, "crashed", "RuntimeError: CUDA out of memory")])
    crashed = header_text(store, HeaderInfo(state="crashed")).plain
    assert "crashed" in crashed and "CUDA out of memory" in crashed


def test_header_says_how_many_steps_were_lost_and_why():
    # Issue 16 item 7: a run whose end frame counts more steps than arrived is truncated, and says by how much.
    store = RunStore()
    store.ingest(run_frames(1000, ended=None) + [{**end(99, 1999), "total_steps": 3000, "dropped_steps": 1800}])
    assert store.status() == "truncated"
    text = header_text(store, HeaderInfo(state=store.status())).plain
    assert "truncated" in text and "2,000 of 3,000 steps lost (1,800 dropped by the probe's queue)" in text
    live = RunStore()
    live.ingest(run_frames(1000, ended=None))
    live.live_dropped = 250
    assert "250 steps lost (250 dropped by the probe's queue)" in header_text(live, HeaderInfo(state="live")).plain


def test_timeline_marks_alerts_and_the_playhead():
    lines = render_timeline(TimelineState(first=0, last=1000, head=500, loaded=1000, playing=True, speed="×10",
                                          markers=((250, "critical"),), note="truncated recording"), 52)
    track = lines[0].text
    assert track[1 + int(500 / 1000 * 49 + 0.5)] == "●" and track[1 + int(250 / 1000 * 49 + 0.5)] == "▲"
    assert "▶ ×10" in lines[1].text and "step 500 / 1,000" in lines[1].text and "truncated" in lines[1].text


def test_alert_detail_has_evidence_explanation_and_fix():
    a = alert(5, "vanishing_gradients", 1000, "critical", explanation="early layers get almost no gradient")["alert"]
    text = alert_detail(a).plain
    for part in ("critical", "vanishing_gradients", "began at step 1000", "Evidence", "threshold: 1",
                 "early layers get almost no gradient", "Fix", "the fix for vanishing_gradients"):
        assert part in text


def test_summary_lists_model_inputs_and_class_shares():
    store = RunStore()
    store.ingest([meta(), facts(), steps(3, 0, 100)])
    text = summary_text(store, store.rank(0)).plain
    for part in ("MLP", "109,386", "CrossEntropyLoss", "SGD lr 0.1", "multiclass", "mean: 0.13", "class",
                 "40%", "10%"):
        assert part in text, part


@pytest.mark.parametrize("width,height", [(30, 6), (80, 3), (12, 2)])
def test_tiny_sizes_do_not_break_rendering(width, height):
    store = RunStore()
    store.ingest(run_frames(300, ended=None))
    r = render_chart(store.rank(0), LOSS, View(0, 299), width, height)
    assert len(r.lines) == height and all(line.cell_length == width for line in r.lines)
