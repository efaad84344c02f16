"""The sweep (issue 21): the real app through every shipped demo, replayed and live, at 80×24, 120×30 and
160×48, pressing every documented key in every tab. It fails on any exception, and on any alert that `n` does
not reach.

Each demo is recorded once per session (conftest.demo_recordings). Replay: the recording through
`ReplaySource`, as `accmon replay` reads it. Live: the same frames through the app's live path (a QueueSource,
the app not in replay mode), and one real training process attached through its sockets (test_live_demo).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from textual import events

from accmon.probe.recording import RecordingReader
from accmon.tui.app import AccmonApp
from accmon.tui.app.alerts import alert_ident
from accmon.tui.app_sources import QueueSource, ReplaySource
from tests.tui.conftest import DEMOS
from tests.tui.test_app_fixtures import loaded

SIZES = ((80, 24), (120, 30), (160, 48))
TABS = ("1", "2", "3", "4", "5")
# Every key the help documents that changes the view, pressed in every tab at every size (q last, once).
VIEW_KEYS = ("plus", "plus", "less_than_sign", "greater_than_sign", "left", "right", "minus", "f", "e", "E", "g",
             "g", "n", "p", "enter", "r", "r", "0", "home", "shift+right", "shift+left", "end", "space",
             "right_square_bracket", "left_square_bracket", "space", "tab", "up", "down", "enter", "escape", "j", "k")
# Keys that open something (closed again with escape) or write files: once per size.
ONCE_KEYS = ("question_mark", "escape", "o", "escape", "ctrl+p", "escape", "t", "t")
HELP_KEYS = ("question_mark", "space", "escape")
# Every key everywhere, for the two demos the issue met first: a loss that diverges to ~1e32 then NaN (replayed,
# as the crash was met), three alerts at one step (live: the app's live path over the recorded frames).
FULL_DEMOS = (("fault_lr_too_high", "replay"), ("fault_dead_relu", "live"))
EXPORT_KEYS = ("x", "c", "C")


CHARS = {"plus": "+", "minus": "-", "less_than_sign": "<", "greater_than_sign": ">", "right_square_bracket": "]",
         "left_square_bracket": "[", "space": " ", "enter": "\r", "tab": "\t", "question_mark": "?"}


async def _type(app: AccmonApp, pilot: Any, keys: tuple[str, ...]) -> None:
    """Press `keys` as a fast typist would: all queued at once, then wait until the app has handled them.
    (`pilot.press` waits for the process to go idle after every key: ~60 ms a key on this machine.)"""
    for key in keys:
        app.post_message(events.Key(key, CHARS.get(key, key if len(key) == 1 else None)))
    await pilot.pause()


async def _reach_every_alert_with_n(app: AccmonApp, pilot: Any, *, keys: bool) -> None:
    """From the start, `n` as many times as there are alerts: every alert must have been reached. `keys`: through
    the key binding (pilot.press, ~0.15 s a key here); else the action `n` is bound to, run directly."""
    wanted = {alert_ident(a) for a in app.store.alerts.by_key.values()}
    if app.replay:
        await (pilot.press("home") if keys else app.run_action("seek_edge(0)"))
    seen = set()
    for _ in range(len(wanted) + 1):
        await (pilot.press("n") if keys else app.run_action("alert_jump(1)"))
        if app.current_alert is not None:
            seen.add(alert_ident(app.current_alert))
    assert seen == wanted, f"not reachable with n: {wanted - seen}"


async def _sweep(app: AccmonApp, *, full: bool, sizes: tuple[tuple[int, int], ...] = SIZES) -> None:
    """Every tab at every size, every alert by `n`; `full`: every documented key in every tab at every size,
    the screens that open over the panels, and the exports."""
    async with app.run_test(size=sizes[0]) as pilot:
        await loaded(app, pilot, timeout=60.0)
        await _reach_every_alert_with_n(app, pilot, keys=full)
        for i, size in enumerate(sizes):
            await pilot.resize_terminal(*size)
            if full:
                for tab in TABS:
                    await _type(app, pilot, (tab, *VIEW_KEYS))
                    app.sync_now()
            else:  # each tab's key draws its panels (action_tab syncs them): one wait for all five
                await _type(app, pilot, TABS)
            if full:
                await pilot.press(*(ONCE_KEYS if i == 0 else HELP_KEYS))
        if full:
            await pilot.press(*EXPORT_KEYS)
            await app.workers.wait_for_complete()
        await pilot.press("q")
    assert app.return_code == 0, getattr(app, "_exception", None)


def _frames(path: str) -> list[dict[str, Any]]:
    return list(RecordingReader(path).frames())


@pytest.fixture(scope="module")
def recordings(demo_recordings):
    demo_recordings.prepare(DEMOS)
    return demo_recordings


def _replay(path: str, export_dir: Any) -> AccmonApp:
    app = AccmonApp(ReplaySource(path, rerun_rules=False), export_dir=export_dir)
    app.animation_level = "none"
    return app


def _live(path: str, export_dir: Any) -> AccmonApp:
    src = QueueSource()
    src.push(*_frames(path))
    app = AccmonApp(src, export_dir=export_dir)
    app.animation_level = "none"
    return app


@pytest.mark.parametrize("demo", DEMOS)
def test_every_demo(demo, recordings, tmp_path):
    """Every demo replayed: each tab drawn, every alert reached by `n`. At one size each, in turn (each size gets
    a third of the demos): a demo's tabs at all three sizes cost ~5 s here, 39 demos too long for every run.
    ACCMON_SWEEP=full: every size and every documented key, replayed and live (~30 s a demo)."""
    full = os.environ.get("ACCMON_SWEEP") == "full"
    size = SIZES[DEMOS.index(demo) % len(SIZES)]
    asyncio.run(_sweep(_replay(recordings.get(demo), tmp_path), full=full, sizes=SIZES if full else (size,)))
    if full:
        asyncio.run(_sweep(_live(recordings.get(demo), tmp_path), full=True))


@pytest.mark.parametrize(("demo", "mode"), FULL_DEMOS)
def test_every_key_in_every_tab_at_every_size(demo, mode, recordings, tmp_path):
    path = recordings.get(demo)
    if mode == "replay":
        asyncio.run(_sweep(_replay(path, tmp_path), full=True))
    else:  # the live path differs in keys (← → pan, no playhead), not in layout: one size
        asyncio.run(_sweep(_live(path, tmp_path), full=True, sizes=SIZES[:1]))
