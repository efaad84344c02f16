"""A cleared alert never reads as if it still held (issue 21 item 12): its message is bounded in time, "until step
N: …", in the table, the banner, the detail, and the lines of check and attach --headless."""

from __future__ import annotations

from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource
from accmon.tui.check import format_alert
from accmon.tui.widgets import AlertTable
from tests.tui.test_app_fixtures import T0, alert, run, run_frames

STUCK = "accuracy is stuck at chance: 26.6% after 208 steps, no better than guessing among 4 classes (27.1%)"


def test_a_cleared_alert_says_until_when_it_held():
    frames = run_frames(1500, alerts=False, ended=None)
    seq = max(f["seq"] for f in frames) + 1
    stuck = alert(seq, "accuracy_stuck", 400, state="cleared", cleared_step=1499, last_step=1499)
    stuck["alert"]["message"] = STUCK
    frames.append(stuck)

    async def go():
        src = QueueSource()
        src.push(*frames)
        app = AccmonApp(src, clock=lambda: T0 + 20.0)
        app.animation_level = "none"
        async with app.run_test(size=(160, 48)) as pilot:
            app.sync_now()
            await pilot.pause()
            table = app.query_one("#side-alerts", AlertTable)
            row = table.get_row(next(iter(table.alerts)))
            assert row[3].plain == f"until step 1499: {STUCK}"
            detail = app.detail(table.selected_alert()).plain
            assert f"(cleared)\nuntil step 1499: {STUCK}" in detail and "cleared at step 1499" in detail
            lines = [ln for ln in app.screen_text().splitlines() if "stuck at chance" in ln]
            assert lines and all("until step 1499: accuracy is stuck" in ln for ln in lines), lines
    run(go())

    line = format_alert(stuck["alert"])
    assert f"accuracy_stuck (cleared): until step 1499: {STUCK}" in line
    active = dict(stuck["alert"], state="active", cleared_step=None)
    assert f"accuracy_stuck: {STUCK}" in format_alert(active)
