"""The viewer's store: columnar series, sealed chunks, decimation to a chart's columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accmon.probe import wire
from accmon.tui.store import BLOCK, CHUNK, FLAG_NAN, FLAG_POSINF, Column, RunStore, StepAxis, is_missing


def steps_frame(steps, seq=2, rank=0, **cols):
    return wire.decode(wire.encode(wire.envelope("steps", "r1", rank, seq, steps[-1] if steps else -1,
                                                 steps=list(steps), times=[1000.0 + s * 0.01 for s in steps],
                                                 cols={k: list(v) for k, v in cols.items()})))


def test_values_round_trip_with_missing_distinct_from_nan():
    store = RunStore()
    store.ingest([steps_frame([0, 1, 2, 3], loss=[1.0, float("nan"), None, float("inf")], acc=[None, None, None, 0.5])])
    data = store.rank(0)
    loss = data.columns["loss"].values()
    assert loss[0] == 1.0 and math.isnan(loss[1]) and not is_missing(loss)[1]
    assert is_missing(loss)[2] and loss[3] == np.inf
    acc = data.columns["acc"].values()
    assert is_missing(acc).tolist() == [True, True, True, False] and acc[3] == 0.5
    assert data.columns["loss"].nonfinite == 2 and data.columns["loss"].measured == 3
    assert data.latest("acc") == 0.5 and data.columns["loss"].last_finite == 1.0


def test_a_series_first_seen_late_is_backfilled_and_one_never_measured_is_not_created():
    store = RunStore()
    store.ingest([steps_frame([0, 1], loss=[1.0, 2.0]), steps_frame([2, 3], seq=3, loss=[3.0, 4.0], val_loss=[None, 9.0],
                                                                        never=[None, None])])
    data = store.rank(0)
    assert "never" not in data.columns
    v = data.columns["val_loss"].values()
    assert len(v) == 4 and is_missing(v).tolist() == [True, True, True, False]


def test_a_step_continued_in_the_next_frame_merges_into_one_row():
    store = RunStore()
    store.ingest([steps_frame([0, 1], loss=[1.0, 2.0], acc=[0.1, None]),
                  steps_frame([1, 2], seq=3, loss=[None, 3.0], acc=[0.2, 0.3])])
    data = store.rank(0)
    assert data.axis.n == 3
    assert data.columns["loss"].values().tolist() == [1.0, 2.0, 3.0]
    assert data.columns["acc"].values().tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_steps_going_backwards_are_dropped_and_counted():
    store = RunStore()
    store.ingest([steps_frame([10, 11], loss=[1.0, 2.0]), steps_frame([5, 6, 12], seq=3, loss=[7.0, 8.0, 9.0])])
    data = store.rank(0)
    assert data.axis.steps_at(np.arange(3)).tolist() == [10, 11, 12]
    assert data.out_of_order == 2


def test_malformed_frames_are_counted_not_raised():
    store = RunStore()
    bad = [
        {"kind": "steps", "rank": 0, "steps": "nope"},
        {"kind": "alert", "rank": 0, "alert": "not a map"},
        {"kind": "facts", "rank": 0, "facts": [1, 2]},
        {"kind": "steps", "rank": "zero", "steps": [1], "cols": {}},
        {"kind": "steps", "rank": 0, "steps": [1, 2], "cols": {"loss": [1.0]}},
    ]
    ch = store.ingest(bad + [steps_frame([0], loss=[1.0])])
    assert ch.malformed == 5 and store.malformed == 5 and "malformed" in store.last_problem
    assert store.rank(0).columns["loss"].values().tolist() == [1.0]


def test_sealed_chunks_keep_values_within_the_quantisation_bound():
    rng = np.random.default_rng(0)
    n = 3 * CHUNK + 123
    loss = rng.uniform(0.5, 2.5, n)  # within LOG_RATIO: sealed on a linear scale
    grad = 10.0 ** rng.uniform(-9, 6, n)  # decades apart: sealed on a log scale
    col_l, col_g = Column("loss"), Column("grad")
    col_l.append(loss.astype(np.float32))
    col_g.append(grad.astype(np.float32))
    got_l, got_g = col_l.values(), col_g.values()
    for c in range(3):
        sl = slice(c * CHUNK, (c + 1) * CHUNK)
        span = loss[sl].max() - loss[sl].min()
        assert np.abs(got_l[sl] - loss[sl]).max() <= span / 65531 * 0.51 + 1e-6
        rel = np.abs(got_g[sl] / grad[sl] - 1)
        assert rel.max() < math.log(grad[sl].max() / grad[sl].min()) / 65531 + 1e-6
    tail = slice(3 * CHUNK, n)
    assert np.array_equal(got_l[tail], loss[tail].astype(np.float32))  # the unsealed chunk is exact


def test_sealed_chunks_keep_nan_inf_and_missing():
    col = Column("x")
    v = np.linspace(0, 1, CHUNK + 5).astype(np.float32)
    v[7], v[8], v[9] = np.nan, np.inf, -np.inf
    v.view(np.uint32)[10] = np.uint32(0x7FC00A11)
    col.append(v)
    got = col.values(0, 20)
    assert math.isnan(got[7]) and not is_missing(got)[7]
    assert got[8] == np.inf and got[9] == -np.inf and is_missing(got)[10]
    assert got[11] == pytest.approx(v[11], abs=1 / 65531)


def brute(values, edges):
    mins, maxs, flags = [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = values[a:b]
        fin = seg[np.isfinite(seg)]
        mins.append(fin.min() if len(fin) else np.nan)
        maxs.append(fin.max() if len(fin) else np.nan)
        flags.append(bool((np.isnan(seg) & ~is_missing(seg)).any()))
    return np.array(mins), np.array(maxs), np.array(flags)


def test_narrow_buckets_are_exact():
    rng = np.random.default_rng(1)
    vals = rng.normal(size=5000).astype(np.float32)
    vals[100] = np.nan
    vals.view(np.uint32)[200:300] = np.uint32(0x7FC00A11)
    col = Column("x")
    col.append(vals)
    edges = np.array([0, 50, 150, 150, 250, 400, 4999, 5000])
    b = col.buckets(edges)
    mins, maxs, nan = brute(vals, edges)
    assert np.allclose(b.mins, mins, equal_nan=True) and np.allclose(b.maxs, maxs, equal_nan=True)
    assert ((b.flags & FLAG_NAN) > 0).tolist() == nan.tolist()
    assert b.counts[2] == 0 and math.isnan(b.mins[2])  # an empty bucket stays empty


def test_wide_buckets_read_block_summaries_over_sealed_and_open_chunks():
    rng = np.random.default_rng(2)
    n = 5 * CHUNK + 1000
    vals = np.cumsum(rng.normal(size=n)).astype(np.float32)
    vals[3 * CHUNK + 17] = np.inf
    col = Column("x")
    col.append(vals)
    edges = np.linspace(0, n, 301).astype(np.int64)
    b = col.buckets(edges)
    # Edges move to whole blocks (at most half a block): compare against the same buckets computed by brute force.
    bedges = (edges + BLOCK // 2) // BLOCK * BLOCK
    bedges[-1] = n
    # Block summaries are taken before a chunk is quantised: they are exact.
    mins, maxs, _ = brute(vals, bedges)
    assert np.array_equal(b.mins, mins) and np.array_equal(b.maxs, maxs)
    assert b.counts.sum() == n - 1
    hit = int(np.searchsorted(bedges, 3 * CHUNK + 17, side="right")) - 1
    assert b.flags[hit] & FLAG_POSINF and (b.flags & FLAG_POSINF).sum() == FLAG_POSINF
    means = np.array([vals[a:c].astype(np.float64).mean() for a, c in zip(bedges[:-1], bedges[1:])])
    finite = np.isfinite(means)
    assert np.allclose(b.means[finite], means[finite], rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=60), st.integers(0, 3))
def test_step_axis_rows_match_a_plain_searchsorted(gaps, seed):
    rng = np.random.default_rng(seed)
    steps = np.cumsum(np.repeat(np.array(gaps) - 1, 1 + rng.integers(0, CHUNK // 8, len(gaps)))).astype(np.int64)
    axis = StepAxis()
    for part in np.array_split(steps, 7):
        axis.append(part)
    q = rng.integers(-2, int(steps[-1]) + 3, 50)
    for side in ("left", "right"):
        assert axis.rows(q, side).tolist() == np.searchsorted(steps, q, side).tolist()
    rows = rng.integers(0, len(steps), 30)
    assert axis.steps_at(rows).tolist() == steps[rows].tolist()


@pytest.mark.parametrize("stride", [1, 3])
def test_step_axis_with_a_fixed_stride_answers_without_searching(stride):
    steps = np.arange(5, 5 + stride * 3 * CHUNK, stride, dtype=np.int64)
    axis = StepAxis()
    for part in np.array_split(steps, 5):
        axis.append(part)
    assert axis.stride == stride
    q = np.array([-10, 4, 5, 6, 7, 5 + stride * 1000, 5 + stride * 1000 + 1, int(steps[-1]), int(steps[-1]) + 9])
    for side in ("left", "right"):
        assert axis.rows(q, side).tolist() == np.searchsorted(steps, q, side).tolist()
    axis.append(np.array([int(steps[-1]) + stride + 1]))  # one irregular step: back to searching
    assert axis.stride == -1


def test_alerts_update_by_identity_and_list_newest_first():
    store = RunStore()
    def alert(seq, aid, step, **kw):
        return wire.envelope("alert", "r1", 0, seq, step, alert={"id": aid, "severity": "warning", "step": step,
                                                                  "message": aid, "state": "active", **kw})
    store.ingest([alert(2, "lr_too_high", 10), alert(3, "nan_loss", 50, severity="critical"),
                  alert(4, "lr_too_high", 10, state="cleared", cleared_step=40)])
    order = [a["id"] for _, a in store.alerts.newest_first()]
    assert order == ["nan_loss", "lr_too_high"]
    assert store.alerts.newest_first()[1][1]["state"] == "cleared"
    assert [a["id"] for _, a in store.alerts.newest_first(up_to_step=20)] == ["lr_too_high"]


def test_status_from_end_and_exit_frames():
    store = RunStore()
    store.ingest([wire.envelope("meta", "r1", 0, 1, -1, name="train", host="h", pid=1)])
    assert store.status() is None and store.name == "train"
    store.ingest([wire.envelope("end", "r1", 0, 2, 5, status="crashed", error="RuntimeError: boom", total_steps=5)])
    assert store.status() == "crashed" and "boom" in store.error()
    other = RunStore()
    other.ingest([wire.envelope("exit", "r1", 0, 9, 5, exit_code=None, signal="SIGKILL")])
    assert other.status() == "crashed" and other.error() == "killed by SIGKILL"


def test_speed_and_replay_clock_come_from_the_runs_own_times():
    store = RunStore()
    for i in range(10):
        store.ingest([steps_frame(list(range(i * 100, (i + 1) * 100)), seq=i + 2, loss=[1.0] * 100)])
    data = store.rank(0)
    assert data.steps_per_s() == pytest.approx(100.0, rel=0.02)  # steps are 0.01 s apart
    assert data.step_at_time(1000.0 + 5.0) == pytest.approx(500)  # interpolated within and between frames
    assert data.step_at_time(1000.0 + 2.505) == pytest.approx(250.5)
    assert data.time_at_step(499) == pytest.approx(1004.99)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
                         min_size=3, max_size=3), min_size=1, max_size=30))
def test_packed_columns_decoded_as_arrays_ingest_as_lists_do(rows):
    # What the live app receives (wire.decode(arrays=True) of a packed frame) against the list form.
    def frames(arrays):
        out = []
        for k in range(0, len(rows), 7):
            chunk = rows[k:k + 7]
            steps = list(range(k, k + len(chunk)))
            frame = wire.envelope("steps", "r1", 0, 2 + k, steps[-1], steps=steps, times=[1.0 + s for s in steps],
                                  cols={name: [r[j] for r in chunk] for j, name in enumerate(("loss", "acc", "gn"))})
            payload = wire.encode(wire.pack_steps(frame) if arrays else frame)
            out.append(wire.decode(payload, arrays=arrays))
        return out

    got = {}
    for arrays in (False, True):
        store = RunStore()
        store.ingest(frames(arrays))
        data = store.rank(0)
        got[arrays] = {n: (c.values().view(np.uint32).tolist(), c.measured, c.nonfinite, c.last_value, c.last_finite)
                       for n, c in data.columns.items()}
        got[arrays]["axis"] = data.axis.rows(np.arange(len(rows))).tolist()
    assert repr(got[False]) == repr(got[True])  # repr: NaN last values compare equal as text


def test_a_run_that_lost_steps_is_truncated_and_says_how_many():
    # Issue 16 item 7: the viewer said "run finished" of a run that lost two thirds of its steps.
    from accmon.probe import wire as w

    store = RunStore()
    store.ingest([w.envelope("meta", "r", 0, 1, -1, name="r"),
                  w.envelope("steps", "r", 0, 2, 9, steps=list(range(10)), times=[0.0] * 10, cols={"loss": [1.0] * 10}),
                  w.envelope("end", "r", 0, 3, 29, status="finished", error=None, total_steps=30, dropped_steps=20)])
    assert store.status() == "truncated"
    assert store.loss() == {"logged": 30, "received": 10, "lost": 20, "dropped": 20, "complete": False}
    cut = RunStore()  # a recording cut short: `accmon run` appended its exit frame, the end never came
    cut.ingest([w.envelope("meta", "r", 0, 1, -1, name="r"), w.envelope("exit", "r", 0, 2, -1, exit_code=0, signal=None)])
    assert cut.status() == "truncated"


def test_a_frame_naming_more_series_than_any_run_keeps_the_first_ones():
    # Issue 16 item 9: 200,000 columns in a 3.5 MB file held 1.47 GB.
    from accmon.tui import store as store_module

    store = RunStore()
    n = store_module.MAX_SERIES + 5000
    store.ingest([wire.envelope("steps", "r", 0, 1, 0, steps=[0], times=[0.0], cols={f"c{i}": [1.0] for i in range(n)})])
    data = store.ranks[0]
    assert len(data.columns) == store_module.MAX_SERIES and data.series_left_out == 5000


def test_a_file_naming_more_ranks_than_any_run_keeps_the_first_ones():
    from accmon.tui import store as store_module

    store = RunStore()
    n = store_module.MAX_RANKS + 100
    store.ingest([wire.envelope("steps", "r", r, 1, 0, steps=[0], times=[0.0], cols={"loss": [1.0]}) for r in range(n)])
    assert len(store.ranks) == store_module.MAX_RANKS and store.malformed == 100
