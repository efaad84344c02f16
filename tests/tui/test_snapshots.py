"""SVG snapshots of the main screens at 80×24 and 160×48, live and replay (pytest-textual-snapshot).

Deterministic: frames with fixed times, a frozen clock, no animation, no notification on screen. Review the
diff report before updating (`make snapshots-update`, then open snapshot_report.html).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource, ReplaySource
from tests.tui.test_app_fixtures import T0, run_frames, write_recording

SIZES = [(80, 24), (160, 48)]


def live_app() -> AccmonApp:
    src = QueueSource()
    src.push(*run_frames(1500, ended=None, vanishing=True))
    app = AccmonApp(src, clock=lambda: T0 + 20.0, refresh_s=3600)
    app.animation_level = "none"
    return app


async def ready(pilot) -> None:
    app = pilot.app
    deadline = time.monotonic() + 20
    while app.source is not None and app.source.kind == "replay" and not app.source.status.loaded:  # no rules here
        if time.monotonic() > deadline:
            raise AssertionError("recording did not load")
        await asyncio.sleep(0.02)
    app.sync_now()
    await pilot.pause()
    app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_overview(snap_compare, size):
    assert snap_compare(live_app(), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_alerts_selected(snap_compare, size):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("5")
        await ready(pilot)

    assert snap_compare(live_app(), terminal_size=size, run_before=before)


def test_live_gradients(snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("2")
        await ready(pilot)

    assert snap_compare(live_app(), terminal_size=(160, 48), run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_at_an_alert(snap_compare, size, tmp_path):
    path = write_recording(tmp_path / "run.accmon", run_frames(1500, ended="finished", nan_at=1200))
    app = AccmonApp(ReplaySource(path, rerun_rules=False), clock=lambda: T0, refresh_s=3600)
    app.animation_level = "none"

    async def before(pilot):
        await ready(pilot)
        await pilot.press("home", "n", "n")  # the second alert: vanishing gradients at step 1000
        await ready(pilot)

    assert snap_compare(app, terminal_size=size, run_before=before)


def ranks_app() -> AccmonApp:
    """Four ranks of a DDP run: each its own loss and accuracy (a scale and noise per rank), rank 3 behind."""
    from tests.tui.test_app_ranks import rank_frames

    src = QueueSource()
    src.push(*rank_frames(4, 1200, 200, lag=200))
    app = AccmonApp(src, clock=lambda: T0 + 20.0, refresh_s=3600)
    app.animation_level = "none"
    return app


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ranks_together(snap_compare, size):
    assert snap_compare(ranks_app(), terminal_size=size, run_before=ready)


def test_ranks_one_rank_shown(snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("r", "r")  # all → rank 0 → rank 1
        await ready(pilot)

    assert snap_compare(ranks_app(), terminal_size=(160, 48), run_before=before)
