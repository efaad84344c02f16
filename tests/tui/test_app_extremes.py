"""The app on values at the edges (issue 16 item 6, issue 21 item 1): a diverging demo, epoch=inf, steps near the
int64 limit, integers past 2**63, an empty alert table under the keys; and what happens if the app ever dies."""

from __future__ import annotations

import os
import re
from pathlib import Path

from accmon.tui import app as app_module
from accmon.tui.app import AccmonApp, run_app
from accmon.tui.app_sources import ReplaySource
from tests.tui.test_app_fixtures import T0, end, facts, frame, loaded, meta, run, steps, write_recording


async def replay_through(path: str, keys: list[str], size=(160, 48)) -> AccmonApp:
    """Replay `path`, press `keys` (redrawing after each), and return the app, closed. Fails on any exception."""
    app = AccmonApp(ReplaySource(path, rerun_rules=False), clock=lambda: T0, refresh_s=3600)
    app.animation_level = "none"
    async with app.run_test(size=size) as pilot:
        await loaded(app, pilot)
        for key in keys:
            await pilot.press(key)
            app.sync_now()
            await pilot.pause()
        text = app.screen_text()
    assert app.return_code in (None, 0), app._exception
    app.last_text = text  # type: ignore[attr-defined]
    return app


def test_a_diverging_demo_replays_with_its_loss_drawn_and_no_crash(demo_recording):
    # fault_lr_too_high: the loss reaches ~5e32 before it turns NaN. Its y ticks were Python ints (10**32) that
    # numpy held in an object array, and the chart died in `to_dot` (issue 21 item 1).
    app = run(replay_through(demo_recording("fault_lr_too_high"), ["home", "n", "p", "2", "3", "4", "5", "1", "g", "end"]))
    assert "loss" in app.last_text and "✕" in app.last_text  # the NaN steps are marked
    assert re.search(r"e\+[23]\d", app.last_text)  # the scale reaches the divergence (~1e32, log scale after g)


def test_epoch_inf_in_the_header(tmp_path):
    f = steps(3, 0, 50)
    f["cols"]["epoch"] = [float("inf")] * 50
    path = write_recording(tmp_path / "r.accmon", [meta(), facts(), f, end(4, 49)])
    app = run(replay_through(path, ["1"]))
    assert "epoch +Inf" in app.last_text


def test_steps_near_the_int64_limit(tmp_path):
    base = 2**63 - 100
    f = frame("steps", 3, base + 49, steps=[base + i for i in range(50)], times=[T0 + i for i in range(50)],
              cols={"loss": [1.0 + i for i in range(50)], "acc": [0.5] * 50})
    path = write_recording(tmp_path / "r.accmon", [meta(), facts(), f, end(4, base + 49)])
    app = run(replay_through(path, ["plus", "less_than_sign", "greater_than_sign", "0", "home", "end"]))
    assert "9.22e+18" in app.last_text


def test_integer_columns_past_2_63(tmp_path):
    f = frame("steps", 3, 49, steps=list(range(50)), times=[T0 + i for i in range(50)],
              cols={"loss": [2**63 + i for i in range(50)], "acc": [2**64 - 1] * 50, "grad_norm": [2**63] * 50})
    path = write_recording(tmp_path / "r.accmon", [meta(), facts(), f, end(4, 49)])
    app = run(replay_through(path, ["g", "2", "1"]))
    assert "loss" in app.last_text


def test_up_on_an_empty_alert_table_in_every_tab(tmp_path):
    # Every healthy run has an empty table: Tab puts the focus in it, ↑ highlights "no row" (row_key None).
    path = write_recording(tmp_path / "r.accmon", [meta(), facts(), steps(3, 0, 50), end(4, 49)])
    app = run(replay_through(path, ["tab", "up", "down", "enter", "5", "tab", "up", "down", "enter", "n", "p"],
                             size=(160, 48)))
    assert "5 Alerts" in app.last_text


class _Broken(AccmonApp):
    """The app with one action that fails as a bug would: how the command ends when the app dies."""

    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # relative paths resolve beside the class

    def on_mount(self) -> None:  # Textual calls AccmonApp.on_mount too (handlers run along the MRO)
        self.call_after_refresh(self._fail)

    def _fail(self) -> None:
        raise ZeroDivisionError("a bug in the viewer")


def test_an_app_that_dies_exits_non_zero_with_the_traceback_saved(tmp_path, runtime_dir, capfd):
    path = write_recording(tmp_path / "r.accmon", [meta(), facts(), steps(3, 0, 50), end(4, 49)])
    rc = run_app(_Broken(ReplaySource(path, rerun_rules=False)), headless=True)
    assert rc == 1
    saved = [f for f in os.listdir(runtime_dir) if f.startswith("accmon-crash-")]
    assert len(saved) == 1
    with open(os.path.join(runtime_dir, saved[0])) as fh:
        assert "ZeroDivisionError: a bug in the viewer" in fh.read()
    err = capfd.readouterr().err
    assert f"traceback is saved in {os.path.join(runtime_dir, saved[0])}" in err
