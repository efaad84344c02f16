"""The `accmon` terminal app: live panels, alerts you can act on, replay with a timeline — at any run length.

Frames come from a source (a live run, a recording, a test) that does its I/O on its own thread. The app pulls
them on a timer (`REFRESH_S`), ingests them into the columnar store under a time budget, and redraws only the
widgets of the visible tab whose data or view changed. Charts read decimated summaries, so a redraw costs the
same at step 1,000 and at step 10,000,000.

The rooms: `viewer` (`AccmonApp`: the timer, ingest, redraw), built on `state` (the view state as reactives and
what derives from it) with the mixins `alert_panes`, `view_keys` and `run_keys`; pure functions in `view` (the
window, zoom, pan, the replay playhead) and `alerts` (the order `n` walks, the banner, the detail's words);
`layout` (charts, heat maps, tabs), `screens` (help, the run picker), `files` (exports and screenshots),
`launch` (the entry points for the command line: `run_live`, `run_live_for_process`, `run_replay`, `run_picker`,
`run_app`).
"""

from __future__ import annotations

from ..app_sources import LiveSource, QueueSource, ReplaySource
from .files import svg_to_png
from .launch import run_app, run_live, run_live_for_process, run_picker, run_replay, save_crash
from .screens import HelpScreen, PickerScreen
from .viewer import AccmonApp

__all__ = ["AccmonApp", "HelpScreen", "LiveSource", "PickerScreen", "QueueSource", "ReplaySource", "run_app",
           "run_live", "run_live_for_process", "run_picker", "run_replay", "save_crash", "svg_to_png"]
