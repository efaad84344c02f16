"""The app on a live source, driven through Textual's Pilot: keys, resize, alert selection, a run's end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from accmon.probe.registry import RunEntry
from accmon.tui.app import AccmonApp, HelpScreen, PickerScreen
from accmon.tui.app_sources import QueueSource
from accmon.tui.widgets import AlertTable, LayerHeatMap
from tests.tui.test_app_fixtures import T0, alert, end, meta, run, run_frames, steps


def live_app(frames=None, **kw) -> tuple[AccmonApp, QueueSource]:
    src = QueueSource()
    src.push(*(frames if frames is not None else run_frames(1500, ended=None)))
    app = AccmonApp(src, clock=lambda: T0 + 20.0, **kw)
    app.animation_level = "none"  # the tab underline's animation only costs test time
    return app, src


async def settle(app, pilot):
    app.sync_now()
    await pilot.pause()


def test_tabs_switch_by_key_and_show_their_panels():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            text = app.screen_text()
            assert "accuracy" in text and "loss" in text and "gradient norm" in text
            await pilot.press("2")
            assert app.query_one("#tabs").active == "gradients"
            await settle(app, pilot)
            heat = app.query_one("#heat-grad", LayerHeatMap)
            assert heat.rendered().layers == ["encoder.fc1", "encoder.fc2", "head"]
            assert "encoder.fc1" in app.screen_text()
            await pilot.press("3")
            await settle(app, pilot)
            assert "dead fraction per layer" in app.screen_text()
            await pilot.press("4")
            await settle(app, pilot)
            assert "CrossEntropyLoss" in app.screen_text()
            await pilot.press("1")
            assert app.query_one("#tabs").active == "overview"
    run(go())


def test_zoom_pan_follow_and_whole_run_move_every_chart():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert (app.view().x0, app.view().x1) == (0, 1499)
            await pilot.press("plus")
            v = app.view()
            assert v.x1 == 1499 and v.x1 - v.x0 == 749.5
            assert app.query_one("#chart-loss").view == app.query_one("#chart-acc").view == v
            await pilot.press("less_than_sign")
            panned = app.view()
            assert not app.follow and panned.x1 < 1499
            src.push(steps(50, 1500, 100))
            await settle(app, pilot)
            assert app.view().x1 == panned.x1  # not following: new steps do not move the view
            await pilot.press("f")
            assert app.view().x1 == 1599  # following the newest step again
            await pilot.press("0")
            assert app.span is None and (app.view().x0, app.view().x1) == (0, 1599)
    run(go())


def test_smoothing_and_log_toggles_reach_the_charts():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert "ema 0.9" in app.query_one("#chart-loss").rendered().legend.plain
            await pilot.press("e")
            await settle(app, pilot)
            assert "ema" not in app.query_one("#chart-loss").rendered().legend.plain
            await pilot.press("E")  # stronger smoothing also turns it back on
            assert app.ema_on and app.ema_strength == 0.99
            await pilot.press("g")
            await settle(app, pilot)
            assert app.view().log_y and "log" in app.query_one("#chart-loss").rendered().legend.plain
    run(go())


def test_resizing_to_80x24_switches_to_the_narrow_layout_and_back():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            assert app.query_one("#overview-side").display and app.query_one("#chart-grad").display
            assert "-wide" in app.screen.classes
            await pilot.resize_terminal(80, 24)
            await settle(app, pilot)
            assert "-narrow" in app.screen.classes
            assert not app.query_one("#overview-side").display and not app.query_one("#overview-row2").display
            text = app.screen_text()
            assert "accuracy" in text and "loss" in text and len(text.splitlines()[0]) <= 80
            await pilot.resize_terminal(160, 48)
            await settle(app, pilot)
            assert app.query_one("#overview-side").display
    run(go())


def test_selecting_an_alert_shows_its_story_and_moves_the_charts_to_where_it_began():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            await pilot.press("5")
            await settle(app, pilot)
            table = app.query_one("#alert-table", AlertTable)
            # In the order shown (`rows` is the order rows were added: on a loaded machine the app's own timer may
            # have ingested the run in two parts, the older alert first).
            assert [table.alerts[r.key.value]["id"] for r in table.ordered_rows] == ["vanishing_gradients", "lr_too_high"]
            table.focus()
            await pilot.press("down")  # the older alert: lr_too_high at step 400
            await pilot.pause()
            assert "the fix for lr_too_high" in app.query_one("#alert-detail").render().plain
            await pilot.press("enter")
            await pilot.pause()
            v = app.view()
            assert app.cursor == 400 and not app.follow and v.x0 < 400 < v.x1 and v.x1 - v.x0 < 1499
            assert app.query_one("#tabs").active == "overview"  # enter takes you to the charts
            await settle(app, pilot)
            assert app.query_one("#chart-loss").view.cursor == 400
    run(go())


def test_next_and_previous_alert_keys_walk_through_alerts_in_step_order():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            await pilot.press("p")
            assert app.cursor == 400
            await pilot.press("n")
            assert app.cursor == 1000
            detail = app.query_one("#side-detail").render().plain
            assert "vanishing_gradients" in detail and "1e6 times smaller" in detail
            await pilot.press("p")
            assert app.cursor == 400
    run(go())


def test_a_run_that_finishes_or_crashes_says_so_and_keeps_its_data():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert app.header_info().state == "live"
            src.push(end(90, 1499, "finished"))
            src.set_status(state="ended")
            await settle(app, pilot)
            assert app.header_info().state == "finished" and "finished" in app.screen_text()
        app2, src2 = live_app()
        async with app2.run_test(size=(120, 40)) as pilot:
            src2.push(end(90, 1499, "crashed", "RuntimeError: CUDA out of memory"))
            await settle(app2, pilot)
            text = app2.screen_text()
            assert "crashed" in text and "CUDA out of memory" in text
            assert app2.store.rank(0).axis.n == 1500  # the last data stays on screen
    run(go())


def test_a_killed_process_reads_as_crashed():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            src.set_status(state="gone")
            await settle(app, pilot)
            assert app.header_info().state == "crashed"
            assert "process is gone without an end frame" in app.screen_text()
    run(go())


def test_a_connection_that_drops_and_returns_goes_stalled_then_live():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            src.set_status(state="stalled", message="no frame or heartbeat for 4 s")
            await settle(app, pilot)
            text = app.screen_text()
            assert "stalled" in text and "no frame or heartbeat for 4 s" in text
            src.set_status(state="live", message=None, dropped_live=7)
            src.push(steps(60, 1500, 200))
            await settle(app, pilot)
            text = app.screen_text()
            assert "live" in text and "1,699" in text and "7 live frames dropped" in text
    run(go())


def test_malformed_frames_are_counted_and_the_app_carries_on():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            src.push({"kind": "steps", "rank": 0, "steps": [1, 2], "cols": {"loss": [1.0]}},
                     {"kind": "alert", "rank": 0, "alert": None},
                     {"kind": "facts", "rank": 0, "facts": "model"},
                     {"rank": 0})
            await settle(app, pilot)
            assert "4 malformed frames ignored" in app.screen_text()
            src.push(steps(70, 1500, 10))
            await settle(app, pilot)
            assert app.store.rank(0).axis.last == 1509
    run(go())


def test_a_restarted_run_replaces_the_old_one():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            src.restart()
            src.push(meta(run="run2", name="mnist-mlp-retry"), steps(2, 0, 50, run="run2"))
            await settle(app, pilot)
            assert app.store.run_id == "run2" and app.store.rank(0).axis.n == 50
            assert "mnist-mlp-retry" in app.screen_text()
            assert any("restarted" in n for n in app.notes)
    run(go())


def test_other_ranks_can_be_shown():
    async def go():
        frames = run_frames(600, ended=None) + [meta(rank=1, world_size=2), steps(3, 0, 300, rank=1)]
        app, _ = live_app(frames)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert "ranks 0–1 median" in app.screen_text()  # all ranks together by default
            await pilot.press("r")
            await settle(app, pilot)
            assert app.rank == 0 and app.view().x1 == 599
            await pilot.press("r")
            await settle(app, pilot)
            assert app.rank == 1 and app.view().x1 == 299
            assert "rank 1 of 0–1" in app.screen_text()
    run(go())


def test_help_screen_and_space_does_nothing_live():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("space")
            assert not app.playing
            assert "Play/Pause" not in app.screen_text()  # replay keys are not offered live
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.pause()
            assert "follow the newest step" in app.screen_text()
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
    run(go())


def test_screenshot_and_csv_keys_write_files(tmp_path: Path):
    async def go():
        app, _ = live_app(export_dir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("x")
            await pilot.press("c")
            await app.workers.wait_for_complete()
            await pilot.pause()
        svg = list(tmp_path.glob("accmon-mnist-mlp-step1499.svg"))
        csv = tmp_path / "accmon-mnist-mlp-step1499.csv"
        assert svg and "<svg" in svg[0].read_text()[:200]
        lines = csv.read_text().splitlines()
        assert lines[0].startswith("rank,step,") and "loss" in lines[0] and len(lines) == 1501
    run(go())


def test_the_picker_attaches_the_chosen_run():
    entry = RunEntry(run_id="0101-abc", rank=0, name="picked", host="h", pid=1, started=T0, cmd=["python", "t.py"],
                     pub="ipc:///nowhere.pub", ctl="ipc:///nowhere.ctl")
    attached: list = []

    def attach(entries):
        attached.append(entries)
        src = QueueSource()
        src.push(meta(name="picked"), steps(2, 0, 20))
        return src

    async def go():
        app = AccmonApp(None, attach=attach, list_runs=lambda: [entry], clock=lambda: T0)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, PickerScreen)
            assert "picked" in app.screen_text()
            await pilot.press("enter")
            await pilot.pause()
            await settle(app, pilot)
            assert attached and attached[0][0].run_id == "0101-abc"
            assert app.store.name == "picked" and "picked" in app.screen_text()
    run(go())



def test_the_picker_never_starts_a_scan_beside_one_still_running(monkeypatch):
    # A scan slow to finish (a loaded machine, ranks slow to answer their peek) is left to finish: a new one every
    # second would cancel it and pile up threads (and a test waiting for the scan saw it cancelled).
    entry = RunEntry(run_id="0101-abc", rank=0, name="slow", host="h", pid=1, started=T0, cmd=["python", "t.py"],
                     pub="ipc:///nowhere.pub", ctl="ipc:///nowhere.ctl")
    release, scans, ticks = threading.Event(), [], []
    rescan = PickerScreen._rescan
    monkeypatch.setattr(PickerScreen, "_rescan", lambda self: (ticks.append(1), rescan(self))[-1])

    def list_runs():
        scans.append(1)
        release.wait(60)
        return [entry]

    async def go():
        app = AccmonApp(None, attach=lambda es: None, list_runs=list_runs, clock=lambda: T0)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 60
            while len(ticks) < 3:  # three of the picker's 1-s timer calls, the first scan still running
                assert time.monotonic() < deadline, "the picker's timer never fired"
                await pilot.pause(0.1)
            assert len(scans) == 1
            release.set()
            while "slow" not in app.screen_text():
                assert time.monotonic() < deadline, "the scan's rows never showed"
                await pilot.pause(0.1)
    try:
        run(go())
    finally:
        release.set()

def test_alerts_update_in_place_and_clear():
    async def go():
        app, src = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            src.push(alert(80, "lr_too_high", 400, "warning", state="cleared", cleared_step=900))
            await settle(app, pilot)
            table = app.query_one("#side-alerts", AlertTable)
            assert table.row_count == 2
            assert "(cleared)" in app.screen_text()
    run(go())


def test_light_theme_redraws_every_panel_in_its_palette():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            dark_legend = app.query_one("#chart-loss").rendered().legend
            await pilot.press("t")
            await settle(app, pilot)
            assert not app.current_theme.dark and not app.view().dark
            light_legend = app.query_one("#chart-loss").rendered().legend
            assert dark_legend.spans != light_legend.spans  # the series colours changed with the background
            await pilot.press("t")
            assert app.current_theme.dark
    run(go())


def test_number_keys_switch_tabs_while_the_focus_is_in_the_alert_table_or_detail():
    # Issue 21 item 2: with the focus in a pane's widget, TabbedContent switched back to that pane.
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(app, pilot)
            tabs = app.query_one("#tabs")
            await pilot.press("tab")  # the focus goes into the overview's alert table
            assert isinstance(app.focused, AlertTable)
            for key, tab in (("2", "gradients"), ("5", "alerts"), ("tab", "alerts"), ("tab", "alerts"),
                             ("3", "activations"), ("5", "alerts"), ("tab", "alerts"), ("1", "overview"),
                             ("4", "data")):
                await pilot.press(key)
                if key != "tab":
                    await settle(app, pilot)
                    assert tabs.active == tab, (key, tabs.active)
    run(go())


def test_ctrl_c_quits():
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            await pilot.press("ctrl+c")
        assert app.return_code == 0
    run(go())


def test_narrow_and_middle_terminals_keep_the_diagnosis_and_the_charts_in_sight():
    # Issue 21 item 7: at 80×24 the only trace of the alerts was "▲ 3"; at 120×30 the alert panel kept ~62
    # columns and left the charts 28.
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            banner = app.screen_text().splitlines()[1]
            assert "vanishing_gradients" in banner  # the critical one, before any key
            await pilot.press("p")
            await settle(app, pilot)
            banner = app.screen_text().splitlines()[1]
            assert "lr_too_high @400: lr too high since step 400" in banner and "1 more: n/p" in banner
            await pilot.resize_terminal(120, 30)
            await settle(app, pilot)
            charts = app.query_one("#overview-charts").size.width
            side = app.query_one("#overview-side").size.width
            assert charts >= 70 and side >= 40, (charts, side)
            await pilot.resize_terminal(160, 48)
            await settle(app, pilot)
            row = next(line for line in app.screen_text().splitlines() if "lr_too_high " in line and "400" in line)
            assert "lr too high since step" in row  # the message column has room
    run(go())


def test_a_mistyped_demo_name_gets_a_suggestion(capsys):
    from accmon.tui.demo import cmd_demo

    assert cmd_demo("fault_lr_to_high") == 2
    assert "did you mean fault_lr_too_high" in capsys.readouterr().err
    assert cmd_demo("dead_relu") == 2
    assert "fault_dead_relu" in capsys.readouterr().err


def test_the_command_palette_holds_accmons_actions_only():
    # Issue 21 item 12: Textual's own entries mixed in; no tab, zoom or jump-to-alert commands.
    async def go():
        app, _ = live_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Tab 2: gradients" in titles and "Zoom in" in titles
            assert "Go to alert lr_too_high (step 400)" in titles
            assert "Keys" not in titles and "Screenshot" not in titles
            go_to = next(c for c in app.get_system_commands(app.screen) if c.title.startswith("Go to alert vanish"))
            go_to.callback()
            assert app.cursor == 1000
    run(go())


def test_a_fresh_run_found_by_accmon_run_is_not_called_a_restart():
    # Issue 21 item 12: every fresh `accmon demo`/`accmon run` said "re-attached: the run restarted (pid N)": the
    # source, waiting for the command to register, counts finding it as a new generation.
    async def go():
        src = QueueSource(state="connecting")
        app = AccmonApp(src, clock=lambda: T0 + 20.0)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            src.restart()
            src.set_status(state="live", message="re-attached: the run restarted (pid 4242)")
            src.push(*run_frames(300, ended=None))
            await settle(app, pilot)
            assert app.store.rank(0).axis.n == 300
            assert not any("restart" in n or "re-attached" in n for n in app.notes)
            assert "re-attached" not in app.screen_text()
    run(go())
