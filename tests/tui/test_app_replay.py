"""`accmon replay`: a real recording file read on the replay source's thread, driven through Pilot."""

from __future__ import annotations

import asyncio
import os
import re
import time

import numpy as np
import pytest

from accmon.probe.recording import RecordingError
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import ReplaySource
from accmon.tui.widgets import Timeline
from tests.tui.test_app_fixtures import T0, loaded, run, run_frames, write_recording


def replay_app(path: str, *, rerun_rules: bool = False, timer: bool = False) -> AccmonApp:
    # The fixture's recorded alerts, not today's rules: a fixed diagnosis to steer by (rules: see the test below).
    # Without the timer, the playhead moves only when the test says so (app._advance).
    app = AccmonApp(ReplaySource(path, rerun_rules=rerun_rules), clock=lambda: T0, refresh_s=0.2 if timer else 3600)
    app.animation_level = "none"
    return app


@pytest.fixture
def recording(tmp_path):
    return write_recording(tmp_path / "run.accmon", run_frames(1500, ended="finished"))


def test_replay_opens_on_the_whole_run_with_the_same_panels(recording):
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            text = app.screen_text()
            assert "replay" in text and "accuracy" in text and "loss" in text and "gradient norm" in text
            assert "⏸ ×10  step 1,499 / 1,499" in text  # the timeline: paused at the end
            assert app.query_one("#timeline").display
            assert len(app.store.alerts) == 2
    run(go())


def test_play_pause_speed_and_seek(recording):
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            await pilot.press("home")
            assert app.head_step() == 0
            await pilot.press("right")  # 1 % of the run
            assert app.head_step() == 15
            await pilot.press("shift+right")  # 10 %
            assert app.head_step() == 165
            await pilot.press("left")
            assert app.head_step() == 150
            await pilot.press("right_square_bracket", "right_square_bracket")
            assert app.speed_i == 3  # ×1000
            await pilot.press("space")
            assert app.playing
            start = app.head_step()
            app._advance(0.005)  # 5 ms at ×1000 = 5 s of a run that logged 100 steps a second
            assert app.head_step() == start + 500
            await pilot.press("space")
            assert not app.playing
            await pilot.press("space")
            app._advance(0.5)  # to the end, where playing stops
            assert app.head_step() == 1499 and not app.playing
            await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket", "left_square_bracket")
            assert app.speed_i == 0
            app.seek(100)
            app._advance(1.0)  # ×1: one second of the run's own time is 100 steps
            assert app.head_step() == 200
            await pilot.press("end")
            assert app.head_step() == 1499
    run(go())


def test_playing_runs_on_the_timer_and_stops_at_the_end(recording):
    async def go():
        app = replay_app(recording, timer=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            app.speed_i = 0  # ×1: this run logged 100 steps a second
            # What space does at the end: play again from the start. Called, not pressed, so that no timer tick
            # runs between it and the check (a loaded machine let 3 s of ×1 play pass under a key press).
            # The key itself is pressed in test_play_pause_speed_and_seek and in the sweep.
            app.action_play_pause()
            assert app.playing and app.head_step() == app._bounds()[0]
            deadline = time.monotonic() + 20
            while app.head_step() < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert app.playing and 20 <= app.head_step() < 1499
            await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket",
                              "right_square_bracket")
            assert app.speed_i == 4  # max
            while app.playing and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not app.playing and app.head_step() == 1499
            assert "⏸ max" in app.screen_text()
    run(go())


def test_replay_runs_todays_rules_over_the_recording(tmp_path):
    path = write_recording(tmp_path / "nan.accmon", run_frames(1500, nan_at=1200, alerts=False))

    async def go():
        app = replay_app(path, rerun_rules=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            ids = {a["id"] for _, a in app.visible_alerts()}
            assert "nan_loss" in ids
            nan = next(a for _, a in app.visible_alerts() if a["id"] == "nan_loss")
            assert nan["step"] == 1200 and nan["severity"] == "critical" and nan["fix"]
    run(go())


def test_next_and_previous_alert_move_the_playhead(recording):
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            await pilot.press("home")
            await pilot.press("n")
            assert app.head_step() == 400 and app.cursor == 400
            app.sync_now()
            assert [a["id"] for _, a in app.visible_alerts()] == ["lr_too_high"]  # nothing after the playhead
            await pilot.press("n")
            assert app.head_step() == 1000
            await pilot.press("p")
            assert app.head_step() == 400
            view = app.view()
            assert view.head == 400 and view.x1 == 1499  # whole-run axis, drawn up to the playhead
    run(go())


def test_clicking_the_timeline_seeks(recording):
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(102, 40)) as pilot:
            await loaded(app, pilot)
            timeline = app.query_one(Timeline)
            await pilot.click(Timeline, offset=(1 + 50, 0))  # the middle of a 100-cell track
            await pilot.pause()
            assert abs(app.head_step() - 1499 * 50 / 99) <= 2
            assert timeline.state.head == app.head_step()
    run(go())


def test_a_truncated_recording_replays_what_it_holds_and_says_so(tmp_path):
    path = write_recording(tmp_path / "cut.accmon", run_frames(1500, ended=None))
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 100)  # cut inside the last frame, as a kill -9 mid-write leaves it

    async def go():
        app = replay_app(path)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            assert app.source.status.truncated
            assert app.store.rank(0).axis.last == 1249  # the last, partial frame is gone; the rest is there
            text = app.screen_text()
            assert "truncated recording" in text and "file ends inside a record" in text
            assert any("truncated" in n for n in app.notes)
    run(go())


def test_a_crashed_recording_says_what_crashed(tmp_path):
    path = write_recording(tmp_path / "crash.accmon", run_frames(600, ended="crashed"))

    async def go():
        app = replay_app(path)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            assert "recorded run crashed: RuntimeError: CUDA out of memory" in app.screen_text()
    run(go())


def test_not_a_recording_is_refused_before_the_app_starts(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(RecordingError):
        ReplaySource(str(bad))


def test_replay_csv_key_exports_the_recorded_values(recording, tmp_path):
    async def go():
        app = replay_app(recording)
        app.export_dir = tmp_path
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            await pilot.press("c")
            await app.workers.wait_for_complete()
            await pilot.pause()
        out = tmp_path / "accmon-mnist-mlp-step1499.csv"
        rows = out.read_text().splitlines()
        assert rows[0].split(",")[:3] == ["rank", "step", "time"] and len(rows) == 1501
    run(go())


def test_the_rules_child_streams_alerts_then_the_final_diagnosis(tmp_path):
    import io

    from accmon.tui.replay import main as rules_main
    from accmon.tui.replay import read_messages

    path = write_recording(tmp_path / "nan.accmon", run_frames(1500, nan_at=1200, alerts=True))
    out = io.BytesIO()
    assert rules_main([path], out) == 0
    messages = list(read_messages(io.BytesIO(out.getvalue())))
    streamed = [m["alert"]["id"] for m in messages if "alert" in m]
    final = messages[-1]["final"]
    assert "nan_loss" in streamed and "nan_loss" in {a["id"] for a in final}
    assert "vanishing_gradients" not in {a["id"] for a in final}  # the recorded (fixture) alerts are not today's


def test_n_reaches_the_root_cause_first_and_every_alert_at_one_step(demo_recording):
    # fault_dead_relu: dead_relu, accuracy_stuck and single_class_prediction fire at one step. `n` compared steps
    # only, so it always landed on one of the symptoms and never reached dead_relu (issue 21 item 3).
    async def go():
        app = replay_app(demo_recording("fault_dead_relu"))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            ids = {a["id"] for a in app.store.alerts.by_key.values()}
            assert {"dead_relu", "accuracy_stuck", "single_class_prediction"} <= ids
            await pilot.press("home")
            seen = []
            for _ in range(len(ids)):
                await pilot.press("n")
                seen.append(app.current_alert["id"])
            assert seen[0] == "dead_relu" and set(seen) == ids
            await pilot.press("p")
            assert app.current_alert["id"] == seen[-2]
            assert "dead_relu" in app.query_one("#side-detail").render().plain
    run(go())


def test_a_symptoms_detail_shows_the_fix_first_and_names_its_cause(demo_recording):
    # Issue 21 item 6: message → fix → likely cause (the other alert, by name) → evidence, layers by module name.
    async def go():
        app = replay_app(demo_recording("fault_dead_relu"))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            stuck = next(a for a in app.store.alerts.by_key.values() if a["id"] == "accuracy_stuck")
            text = app.detail(stuck).plain
            assert text.index("Fix") < text.index("Likely cause") < text.index("Evidence")
            assert "dead_relu (step" in text and "chance" not in text.split("Likely cause")[1].split("\n")[0]
            dead = next(a for a in app.store.alerts.by_key.values() if a["id"] == "dead_relu")
            assert "1 (ReLU) 1" in app.detail(dead).plain  # the module's name and kind, not {1: 1, 3: 1}
    run(go())


def test_a_healthy_run_gets_a_verdict_when_it_ends(demo_recording):
    # Issue 21 item 10: healthy_mlp (the `make demo` default) ended with "Alerts appear here as the rules fire".
    async def go():
        app = replay_app(demo_recording("healthy_mlp"))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            assert not app.store.alerts
            app.sync_now()
            await pilot.pause()
            text = app.query_one("#side-detail").render().plain
            assert "Finished clean" in text and "no problem found, steps 0–207" in text and "Checked:" in text
            await pilot.press("home")
            app.sync_now()
            await pilot.pause()
            assert "No alerts so far (step 0)" in app.query_one("#side-detail").render().plain
    run(go())


def test_the_header_and_tabs_describe_the_run_as_of_the_playhead(recording):
    # Issue 21 item 9: after seeking to step 0 the header kept the last epoch, and counted alerts the table
    # (rightly) did not show yet.
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            assert "epoch 2" in app.screen_text() and "▲ 2 alerts" in app.screen_text()
            await pilot.press("home")
            app.sync_now()
            await pilot.pause()
            text = app.screen_text()
            assert "epoch 0" in text and "▲" not in text.splitlines()[0] and "5 Alerts (" not in text
            app.seek(450)
            await pilot.pause()
            text = app.screen_text()
            assert "▲ 1 alert" in text and "5 Alerts (1)" in text
    run(go())


def test_help_fits_a_small_terminal_and_keeps_its_keys(recording):
    # Issue 21 item 11: one ruled row per key (four keys a screen at 80×24), replay keys below the fold, and
    # space inside help started the replay behind it.
    async def go():
        app = replay_app(recording)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(app, pilot)
            await pilot.press("question_mark")
            await pilot.pause()
            text = app.screen_text()
            for line in ("next / previous alert", "overview · gradients", "zoom in / out", "replay: play/pause",
                         "replay: seek 1 %", "follow the newest step"):
                assert line in text, line
            await pilot.press("space", "j", "k", "right")
            assert not app.playing and app.head is None
            await pilot.press("escape")
            await pilot.press("space")
            assert app.playing
    run(go())


def test_sampled_statistics_are_drawn_joined_and_say_so(demo_recording):
    # Issue 21 item 8: the probe samples gradient norms ever more sparsely (…, 64, 128): the chart ended at step
    # 128 of 207 and the heat map filled with · between samples, with no hint why.
    async def go():
        app = replay_app(demo_recording("healthy_mlp"))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            await pilot.press("2")
            app.sync_now()
            await pilot.pause()
            text = app.screen_text()
            # The probe's schedule (cadence.SCHEDULE: every step of the first 8, then every 4, 8, …) decides N.
            assert re.search(r"sampled every \d+ steps", text), text
            heat = app.query_one("#heat-grad").rendered()
            inner = heat.values[:, : heat.values.shape[1] // 2]  # up to step ~100: sampled columns and gaps
            assert not np.isnan(inner[:, 1:]).all(axis=0).any()
    run(go())


def test_an_alert_updated_after_the_playhead_shows_its_update_as_of_the_playhead(demo_recording):
    # Issue 21 item 9: at step 16 the detail showed step-77 numbers as if they were the run's at step 16. The
    # store keeps each alert's updates: the detail shows the one as of the playhead (tests/tui/test_replay_as_of.py),
    # and says so when even the first is from later.
    async def go():
        app = replay_app(demo_recording("fault_lr_too_high"))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            key, nan = next((k, a) for k, a in app.store.alerts.by_key.items() if a["id"] == "nan_loss")
            assert nan["last_step"] > nan["step"]
            app.select_alert(nan)
            await pilot.pause()
            assert app.head_step() == nan["step"]
            # The probe raised it once its evidence was in (a flush later), and it was not updated after: its first
            # update is from after its step, and the detail says so.
            assert app.store.alerts.at(key, nan["step"]) is nan
            text = app.detail(nan).plain
            assert f"as of step {nan['last_step']}, its first update (the playhead is at step {nan['step']})" in text
            await pilot.press("end")
            assert "as of step" not in app.detail(nan).plain
    run(go())
