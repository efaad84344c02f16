"""Compare with a run that worked (issue 18 item 4): `check --baseline` as a CI gate, the baseline drawn under
the live series in replay (a snapshot) with the header's ahead/behind line, hostile baseline files, and
`run`/`attach --baseline` passing the baseline to the viewer.

The good and the degraded run are the same script (demos/_common.py's MLP on blobs) with a good and a bad learning
rate: the demo recordings `healthy_mlp` and `fault_lr_too_low` (recorded once per session, tests/tui/conftest.py)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accmon.probe import wire
from accmon.probe.recording import RecordingWriter
from accmon.tui import cli
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource, ReplaySource
from accmon.tui.baseline import (
    Aligner,
    Tolerance,
    compare_runs,
    load_baseline,
    standing,
)
from accmon.tui.check import EXIT_UNREADABLE, EXIT_WORSE, check
from accmon.tui.widgets import LineChart
from tests.tui.test_app_fixtures import T0, loaded, run, run_frames, write_recording
from tests.tui.test_snapshots import ready

GOOD, BAD = "healthy_mlp", "fault_lr_too_low"


@pytest.fixture(scope="module")
def runs(demo_recordings) -> dict[str, str]:
    demo_recordings.prepare([GOOD, BAD])
    return {"good": demo_recordings.get(GOOD), "bad": demo_recordings.get(BAD)}


def _check(path: str, baseline: str, *tolerance: str, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = check(path, baseline=baseline, tolerance=tolerance, as_json=as_json, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _check_json(path: str, baseline: str, *tolerance: str) -> tuple[int, dict]:
    rc, out, err = _check(path, baseline, *tolerance, as_json=True)
    assert out, err
    return rc, json.loads(out)


# -- check --baseline -------------------------------------------------------------------------------------------
def test_check_good_against_itself_passes(runs):
    rc, report = _check_json(runs["good"], runs["good"])
    assert rc == 0, report
    b = report["baseline"]
    assert b["verdict"] == "ok" and b["file"] == runs["good"]
    by = {c["criterion"]: c for c in b["criteria"]}
    assert set(by) == {"best_loss", "best_acc", "steps_to_baseline_acc", "divergence"}
    assert by["best_loss"]["metric"] == "val_loss" and by["best_acc"]["metric"] == "val_acc"
    assert by["best_acc"]["new"] == by["best_acc"]["baseline"] and by["best_acc"]["difference"] == 0
    assert all(c["pass"] for c in b["criteria"])
    # The contract's fields keep their meaning.
    assert report["run"]["status"] == "finished" and report["alerts"] == []


def test_check_degraded_run_is_worse(runs):
    rc, report = _check_json(runs["bad"], runs["good"])
    assert rc == EXIT_WORSE == 4
    b = report["baseline"]
    by = {c["criterion"]: c for c in b["criteria"]}
    assert b["verdict"] == "worse"
    assert not by["best_loss"]["pass"] and by["best_loss"]["new"] > by["best_loss"]["baseline"]
    assert not by["best_acc"]["pass"] and by["best_acc"]["difference"] < -0.5  # ~0.25 against ~0.93
    assert not by["steps_to_baseline_acc"]["pass"] and by["steps_to_baseline_acc"]["new"] is None  # never reached
    assert by["divergence"]["pass"]  # a learning rate too low does not diverge
    assert b["tolerance"] == {"loss": 0.05, "acc": 0.05, "steps": 0.25}
    assert {a["id"] for a in report["alerts"]} >= {"lr_too_low"}  # the diagnosis is still there

    # The command: the human report says it, one line per criterion, and the gate's exit code wins over the
    # warnings' 1. Without --baseline the same file keeps its old exit code (a warning fired).
    proc = subprocess.run([sys.executable, "-m", "accmon.tui.cli", "check", runs["bad"], "--baseline", runs["good"]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert f"vs baseline {runs['good']}: WORSE" in proc.stdout
    assert "FAIL best val_acc" in proc.stdout and "never vs" in proc.stdout
    assert check(runs["bad"], out=io.StringIO()) == 1


def test_check_tolerance(runs):
    # Tolerances wide enough pass the degraded run's best results, and its reach of the baseline's accuracy
    # less 1 (anything): not worse, so the exit code is the diagnosis's own (1: warnings fired).
    rc, report = _check_json(runs["bad"], runs["good"], "10", "acc=1")
    by = {c["criterion"]: c for c in report["baseline"]["criteria"]}
    assert by["best_loss"]["pass"] and by["best_acc"]["pass"] and by["best_acc"]["tolerance"] == 1
    assert report["baseline"]["verdict"] == "ok" and rc == 1
    # The reach criterion: the good run takes 25 steps to the baseline's final accuracy less 0.05; a run
    # allowed no extra steps (steps=0) still passes against itself.
    rc, report = _check_json(runs["good"], runs["good"], "steps=0")
    assert rc == 0 and report["baseline"]["tolerance"]["steps"] == 0
    rc, _, err = _check(runs["good"], runs["good"], "lots")
    assert rc == 2 and "not a number" in err
    assert Tolerance.parse(["0.1", "steps=0.5"]) == Tolerance(0.1, 0.1, 0.5)
    with pytest.raises(ValueError, match="keys are loss, acc and steps"):
        Tolerance.parse(["speed=2"])


def test_check_divergence_where_the_baseline_did_not(tmp_path):
    good = write_recording(tmp_path / "good.accmon", run_frames(600, alerts=False))
    nan = write_recording(tmp_path / "nan.accmon", run_frames(600, alerts=False, nan_at=300))
    rc, report = _check_json(nan, good, "1", "steps=10")
    by = {c["criterion"]: c for c in report["baseline"]["criteria"]}
    assert rc == 4 and not by["divergence"]["pass"]
    assert "loss was nan at step 300" in by["divergence"]["new"]
    # A run that crashed before its first step reached nothing: worse.
    empty = write_recording(tmp_path / "empty.accmon", run_frames(0, ended="crashed"))
    rc, report = _check_json(empty, good)
    assert rc == 4 and [c["pass"] for c in report["baseline"]["criteria"]] == [False, False, False, True]
    # Both diverged: not a regression against that baseline.
    rc, report = _check_json(nan, nan)
    assert {c["criterion"]: c["pass"] for c in report["baseline"]["criteria"]}["divergence"]


def _hostile(tmp_path: Path, kind: str, good: str) -> str:
    p = tmp_path / f"{kind}.accmon"
    if kind == "missing":
        return str(tmp_path / "nowhere.accmon")
    if kind == "garbage":
        p.write_bytes(bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "directory":
        p.mkdir()
    elif kind == "no_steps":
        w = RecordingWriter(str(p))
        w.write([wire.encode(f) for f in run_frames(0, ended="finished")])
        w.close()
    return str(p)


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "directory", "no_steps"])
def test_hostile_baseline_exits_2_with_one_line(runs, tmp_path, capsys, kind):
    bad = _hostile(tmp_path, kind, runs["good"])
    rc, _, err = _check(runs["good"], bad)
    assert rc == EXIT_UNREADABLE
    assert err.count("\n") == 1 and err.startswith("accmon check: baseline") and "Traceback" not in err, err
    # The viewer refuses it before anything starts: no app, no source, exit 2.
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", runs["good"], "--baseline", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("accmon replay: baseline"), err


def test_truncated_baseline_is_used_for_what_it_has(runs, tmp_path):
    full = write_recording(tmp_path / "full.accmon", run_frames(1500, alerts=False))
    data = Path(full).read_bytes()
    cut = tmp_path / "cut.accmon"
    cut.write_bytes(data[: len(data) // 2])
    rc, report = _check_json(full, str(cut))
    assert rc == 0 and report["baseline"]["note"].startswith("truncated (byte ")
    base = load_baseline(str(cut))
    assert base.truncated is not None and 0 < base.data.axis.n < 1500
    line = standing(base.data, {}, Aligner(base), base.data.axis.last)
    assert line.startswith("vs truncated baseline: val_acc ") and "baseline truncated (byte " in line
    # Cut before its first step: nothing to compare with, said in one line.
    demo = Path(runs["good"]).read_bytes()
    (tmp_path / "stub.accmon").write_bytes(demo[:3000])
    rc, _, err = _check(full, str(tmp_path / "stub.accmon"))
    assert rc == 2 and "no training step recorded" in err and err.count("\n") == 1


# -- the viewer ------------------------------------------------------------------------------------------------
def test_replay_draws_the_baseline_and_says_behind(runs):
    """The real app replaying the degraded run with the good one as baseline: every chart of the overview draws
    the baseline's series; the header says the run is behind and has not reached the baseline's accuracy."""
    app = AccmonApp(ReplaySource(runs["bad"], rerun_rules=False), baseline=load_baseline(runs["good"]),
                    clock=lambda: T0, refresh_s=3600)
    app.animation_level = "none"

    async def go():
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            header = app.baseline_line()
            assert header is not None and header.startswith("vs baseline: val_acc ")
            assert "behind" in header and "reached baseline's final val_acc" in header and "not yet" in header
            acc = app.query_one("#chart-acc", LineChart).rendered()
            assert acc.dots.get("baseline val", 0) > 10 and acc.dots.get("baseline train", 0) > 10
            assert acc.subtitle is not None and acc.subtitle.plain == "┈ baseline: train, val"
            for wid in ("chart-loss", "chart-grad", "chart-lr"):
                assert any(k.startswith("baseline ") for k in app.query_one(f"#{wid}", LineChart).rendered().dots), wid
            screen = app.screen_text()
            assert "vs baseline: val_acc" in screen
            # b: by epoch, then by samples seen (the demos log epochs; samples from samples_per_s × step_time).
            await pilot.press("b")
            app.sync_now()
            await pilot.pause()
            assert "aligned by epoch" in (app.baseline_line() or "") and "baseline step" in (app.baseline_line() or "")
            assert app.query_one("#chart-acc", LineChart).rendered().dots.get("baseline val", 0) > 10
            await pilot.press("b")
            app.sync_now()
            assert "aligned by samples" in (app.baseline_line() or "")
            await pilot.press("b")
            assert app.aligner is not None and app.aligner.align == "step"

    run(go())


def _shifted(frames: list[dict], acc_up: float, loss_scale: float) -> list[dict]:
    """A better run of the same shape: higher accuracy, lower loss."""
    out = []
    for f in frames:
        if f["kind"] == "steps":
            f = dict(f, cols=dict(f["cols"]))
            for name in ("acc", "val_acc"):
                f["cols"][name] = [None if v is None else min(1.0, v + acc_up) for v in _values(f["cols"][name])]
            for name in ("loss", "val_loss"):
                f["cols"][name] = [None if v is None else v * loss_scale for v in _values(f["cols"][name])]
        out.append(f)
    return out


def _values(col) -> list:
    return col.tolist() if hasattr(col, "tolist") else list(col)


def test_snapshot_replay_with_baseline(snap_compare, tmp_path):
    new = write_recording(tmp_path / "new.accmon", run_frames(1500, ended="finished", alerts=False))
    good = write_recording(tmp_path / "good.accmon", _shifted(run_frames(1500, ended="finished", alerts=False), 0.04, 0.6))
    app = AccmonApp(ReplaySource(new, rerun_rules=False), baseline=load_baseline(good), clock=lambda: T0,
                    refresh_s=3600)
    app.animation_level = "none"

    async def before(pilot):
        await ready(pilot)
        assert "vs baseline: val_acc 0.948 vs 0.988 at step 1499 (−0.04, behind)" in (app.baseline_line() or "")

    assert snap_compare(app, terminal_size=(160, 48), run_before=before)


def test_live_run_ahead_of_its_baseline(tmp_path):
    """Live (frames arriving): the header follows the newest step, says "ahead" for a better run, and the step
    at which the run reached the baseline's final accuracy once it has."""
    base = load_baseline(write_recording(tmp_path / "b.accmon", run_frames(1500, alerts=False)))
    frames = _shifted(run_frames(1500, alerts=False, ended=None), 0.04, 0.6)
    src = QueueSource()
    src.push(*frames[:4])  # meta, facts, steps 0-499
    app = AccmonApp(src, baseline=base, clock=lambda: T0 + 20.0, refresh_s=3600)
    app.animation_level = "none"

    async def go():
        async with app.run_test(size=(160, 48)) as pilot:
            app.sync_now()
            await pilot.pause()
            line = app.baseline_line() or ""
            assert line.startswith("vs baseline: val_acc ") and "at step 499" in line and "ahead" in line, line
            assert "reached baseline's final val_acc 0.948: not yet (the baseline took 1299 steps)" in line
            src.push(*frames[4:])
            app.sync_now()
            await pilot.pause()
            line = app.baseline_line() or ""
            assert "at step 1499" in line and "reached baseline's final val_acc 0.948: at step 899" in line, line
            assert app.query_one("#chart-acc", LineChart).rendered().dots.get("baseline val", 0) > 10
            assert "vs baseline: val_acc" in app.screen_text()

    run(go())


def test_aligner_by_epoch_maps_the_same_point_of_an_epoch(tmp_path):
    """A baseline with epochs of 500 steps beside a run with epochs of 250 steps (half the batches, twice the
    batch size): step 375 of the run (half-way through epoch 1) stands beside the baseline's step 750."""
    base = load_baseline(write_recording(tmp_path / "b.accmon", run_frames(1500, alerts=False)))
    frames = run_frames(1500, alerts=False)
    for f in frames:
        if f["kind"] == "steps":
            f["cols"] = dict(f["cols"], epoch=[float(s // 250) for s in f["steps"]])
    live = load_baseline(write_recording(tmp_path / "l.accmon", frames)).data
    al = Aligner(base, "epoch")
    assert al.fallback(live, {}) is None
    mapped = al.to_baseline(live, {}, np.array([0.0, 250.0, 375.0, 1000.0]))
    assert np.allclose(mapped, [0, 500, 750, 2000])
    assert Aligner(base, "step").to_baseline(live, {}, np.array([375.0]))[0] == 375
    # Samples seen: the baseline's facts say batches of 64 (no samples_per_s); a run with batches of 128 has seen
    # at its step 300 what the baseline had at its step 600 — and the same batches are the same steps.
    by_samples = Aligner(base, "samples")
    assert np.allclose(by_samples.to_baseline(live, {"batch_size": 128}, np.array([300.0])), [601.0], atol=1)
    assert np.allclose(Aligner(base, "samples").to_baseline(live, base.store.facts, np.array([300.0])), [300.0])
    assert Aligner(base, "samples").fallback(live, {}) == "this run has no samples seen yet: aligned by step"
    with pytest.raises(ValueError):
        Aligner(base, "time")


def test_compare_without_validation_uses_training_metrics(tmp_path):
    frames = run_frames(600, alerts=False)
    for f in frames:
        if f["kind"] == "steps":
            f["cols"] = {k: v for k, v in f["cols"].items() if not k.startswith("val_")}
    path = write_recording(tmp_path / "t.accmon", frames)
    base = load_baseline(path)
    cmp = compare_runs(base.data, [], base, [], Tolerance())
    by = {c.name: c for c in cmp.criteria}
    assert by["best_loss"].metric == "loss" and by["best_acc"].metric == "acc" and not cmp.worse
    assert math.isclose(by["best_acc"].new, by["best_acc"].baseline)


# -- run and attach pass it through --------------------------------------------------------------------------------
def test_run_baseline_reaches_the_viewer(runs, monkeypatch, tmp_path):
    import accmon.tui.app as app_mod

    seen = {}

    def fake_run_app(app, **kw):
        seen["aligner"] = app.aligner
        return 0

    monkeypatch.setattr(app_mod, "run_app", fake_run_app)
    monkeypatch.setenv("ACCMON_RUNTIME_DIR", str(tmp_path))
    rc = cli.main(["run", "--baseline", runs["good"], "--align", "epoch", "--", sys.executable, "-c", "pass"])
    assert rc == 0
    al = seen["aligner"]
    assert al is not None and al.baseline.path == runs["good"] and al.align == "epoch"
    # A baseline that is no recording: refused before the command starts.
    marker = tmp_path / "started"
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--baseline", str(tmp_path), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert exc.value.code == 2 and not marker.exists()


def test_attach_baseline_reaches_the_viewer(runs, monkeypatch, tmp_path):
    import accmon.tui.app as app_mod

    seen = {}
    monkeypatch.setattr(app_mod, "run_live", lambda entries, **kw: seen.update(kw) or 0)
    sock = tmp_path / "r.pub"
    sock.write_bytes(b"")
    assert cli.main(["attach", f"ipc://{sock}", "--baseline", runs["good"]]) == 0
    assert seen["baseline"].path == runs["good"] and seen["align"] == "step"
    assert os.path.exists(runs["good"])
