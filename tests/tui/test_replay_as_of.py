"""Replay describes an alert as it stood at the playhead (issue 21 item 9): at step S the table and the detail show
the alert's update as of S — its message and evidence then — not its newest one."""

from __future__ import annotations

from accmon.tui.store import ALERT_HISTORY, AlertBook
from accmon.tui.widgets import AlertTable
from tests.tui.test_app_fixtures import alert, end, loaded, run, run_frames, write_recording
from tests.tui.test_app_replay import replay_app


def _update(seq: int, last_step: int, ratio: float, **extra) -> dict:
    a = alert(seq, "lr_too_high", 400, "warning", last_step=last_step, **extra)
    a["alert"]["message"] = f"each step changes the weights by {ratio:g}× their size"
    a["alert"]["evidence"] = {"update_ratio": ratio, "window": 50}
    return a


def updated_run(tmp_path) -> str:
    frames = run_frames(1500, alerts=False, ended=None)
    seq = max(f["seq"] for f in frames) + 1
    # Raised at 400 with a ratio of 3, worse by 800 and 1,200, cleared at 1,400: four updates of one alert.
    for i, (last, ratio) in enumerate(((400, 3.0), (800, 12.0), (1200, 40.0))):
        frames.append(_update(seq + i, last, ratio))
    frames.append(_update(seq + 3, 1200, 40.0, state="cleared", cleared_step=1400))
    frames.append(end(seq + 4, 1499))
    return write_recording(tmp_path / "updated.accmon", frames)


def test_the_detail_and_table_show_the_alerts_update_as_of_the_playhead(tmp_path):
    async def go():
        app = replay_app(updated_run(tmp_path))
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(app, pilot)
            table = app.query_one("#side-alerts", AlertTable)
            for at, ratio, state in ((450, "3", "active"), (800, "12", "active"), (1300, "40", "active"),
                                     (1499, "40", "cleared")):
                app.seek(at)
                app.sync_now()
                await pilot.pause()
                shown = next(iter(table.alerts.values()))
                assert shown["evidence"]["update_ratio"] == float(ratio) and shown["state"] == state, (at, shown)
                text = app.detail(table.selected_alert()).plain
                assert f"update_ratio: {ratio}" in text and f"by {ratio}× their size" in text, (at, text)
                assert f"({state})" in text and "as of step" not in text
                # Whatever dict the caller holds (the newest, from n/p), the detail is as of the playhead.
                newest = next(iter(app.store.alerts.by_key.values()))
                assert f"update_ratio: {ratio}" in app.detail(newest).plain
            assert "cleared at step 1400" in app.detail(table.selected_alert()).plain
    run(go())


def test_an_alert_whose_first_update_is_after_the_playhead_says_so():
    book = AlertBook()
    book.update({"id": "nan_loss", "severity": "critical", "step": 100, "last_step": 150, "message": "a"})
    key = ("nan_loss", 0, "")
    assert book.at(key, 120)["last_step"] == 150  # the first update is all there is: the detail says it is later
    assert book.newest_first(up_to_step=99) == []


def test_the_history_of_an_alert_is_bounded_and_keeps_its_first_and_newest_updates():
    book = AlertBook()
    for s in range(100, 100 + 10 * ALERT_HISTORY * 4, 10):
        book.update({"id": "lr_too_high", "severity": "warning", "step": 100, "last_step": s, "message": str(s)})
    hist = book.history[("lr_too_high", 0, "")]
    assert len(hist) <= ALERT_HISTORY
    assert hist[0]["last_step"] == 100 and hist[-1]["last_step"] == 100 + 10 * (ALERT_HISTORY * 4 - 1)
    assert [a["last_step"] for a in hist] == sorted(a["last_step"] for a in hist)
    # An update that arrives late (streamed after the final diagnosis) takes its place; the newest stays newest.
    book.update({"id": "lr_too_high", "severity": "warning", "step": 100, "last_step": 105, "message": "late"})
    assert book.by_key[("lr_too_high", 0, "")]["last_step"] == hist[-1]["last_step"]
    assert book.at(("lr_too_high", 0, ""), 107)["message"] == "late"
