"""`AccmonApp`: the timer that pulls frames from a source into the store and redraws what changed; its keys.

The app is one class in several rooms: its state and what derives from it (state.py, `ViewerState`), the alert
panes and `n`/`p` (alert_panes.py), the view's and the playhead's keys (view_keys.py), stop, pick and export
(run_keys.py); pure functions behind them: the window and the playhead (view.py), the alerts' order and words
(alerts.py). The panels are layout.py's; screens.py holds help and the picker.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent

from accmon.probe import registry

from ..app_sources import LiveSource, Source, SourceStatus
from ..baseline import ALIGNS, Aligner, Baseline, standing
from ..on_alert import AlertCommand
from ..store import Changes, RunStore
from ..widgets import (
    BaselineOverlay,
    LayerHeatMap,
    LineChart,
    RunHeader,
    Timeline,
    header_text,
    summary_text,
    system_text,
)
from .alert_panes import AlertPanes
from .layout import SHARDED_WIDGETS, TAB_NOTES, TAB_WIDGETS, compose_tabs
from .run_keys import RunKeys
from .screens import HelpScreen
from .view_keys import ViewKeys

# 5 redraws a second: smooth enough to watch a run, and a redraw of every visible panel costs a few ms at most.
REFRESH_S = 0.2
# Ingest time per tick. When frames are left over (a late join onto a long run, a replay loading) the next tick
# gets the larger budget: the history arrives faster, keys still answer within half a second.
INGEST_BUDGET_S = 0.1
CATCH_UP_BUDGET_S = 0.45
DRAIN_SLICE = 8  # frames per store.ingest call (a frame holds up to a few thousand steps): the budget's grain
FIRST_FRAME_BUDGET_S = 0.03  # until something is drawn: show the first steps now, the rest on the next ticks


class AccmonApp(AlertPanes, ViewKeys, RunKeys):
    """The accmon viewer over one source: a live run (`LiveSource`), a recording (`ReplaySource`), or none yet
    (the run picker opens). `attach` makes a source from registry entries when the user picks another run."""

    CSS_PATH = "app.tcss"
    TITLE = "accmon"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        # As in htop, k9s and less: Ctrl-C leaves (Textual's default only says to press ctrl+q).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("space", "play_pause", "Play/Pause", priority=True),
        Binding("left_square_bracket", "speed(-1)", "Slower"),
        Binding("right_square_bracket", "speed(1)", "Faster"),
        Binding("left", "arrow(-1)", "Seek/Pan", show=False, priority=True),
        Binding("right", "arrow(1)", "Seek/Pan", show=False, priority=True),
        Binding("shift+left", "arrow(-10)", "Seek 10%", show=False, priority=True),
        Binding("shift+right", "arrow(10)", "Seek 10%", show=False, priority=True),
        Binding("home", "seek_edge(0)", "Start", show=False),
        Binding("end", "seek_edge(1)", "End", show=False),
        Binding("n", "alert_jump(1)", "Next alert"),
        Binding("p", "alert_jump(-1)", "Prev alert", show=False),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom"),
        Binding("minus", "zoom(2)", "Zoom out", show=False),
        Binding("0", "zoom_all", "Whole run", show=False),
        Binding("less_than_sign,comma", "pan(-1)", "Pan", show=False),
        Binding("greater_than_sign,full_stop", "pan(1)", "Pan", show=False),
        Binding("f", "follow", "Follow", show=False),
        Binding("e", "toggle_ema", "Smooth"),
        Binding("E", "ema_strength", "Smoothing strength", show=False),
        Binding("g", "toggle_log", "Log"),
        Binding("r", "next_rank", "Rank", show=False),
        Binding("o", "pick", "Runs", show=False),
        Binding("S", "stop_run", "Stop the run", show=False),
        Binding("x", "screenshot", "SVG", show=False),
        Binding("c", "export_csv", "CSV", show=False),
        Binding("C", "export_parquet", "Parquet", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('gradients')", "Gradients", show=False),
        Binding("3", "tab('activations')", "Activations", show=False),
        Binding("4", "tab('data')", "Data", show=False),
        Binding("5", "tab('alerts')", "Alerts", show=False),
        Binding("6", "tab('system')", "System", show=False),
        Binding("b", "baseline_align", "Baseline align", show=False),
    ]

    def __init__(self, source: Source | None = None, *, attach: Callable[[list[registry.RunEntry]], Source] | None = None,
                 list_runs: Callable[[], list[registry.RunEntry]] = registry.list_runs,
                 clock: Callable[[], float] = time.time, refresh_s: float = REFRESH_S,
                 export_dir: str | os.PathLike[str] | None = None, pick: bool = False,
                 on_alert: AlertCommand | None = None, baseline: Baseline | None = None, align: str = "step") -> None:
        super().__init__()
        # --baseline: a run that worked, drawn under this one's series, and the header's comparison.
        self.aligner = Aligner(baseline, align) if baseline is not None else None
        self.on_alert = on_alert  # --on-alert: the user's command, told of each new alert
        if on_alert is not None:
            on_alert.say = self._say_from_thread  # its failures are said where the user looks: a notification
        self.source = source
        self.attach = attach or (lambda entries: LiveSource(entries))
        self.list_runs = list_runs
        self.clock = clock
        self.refresh_s = refresh_s
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self.pick_at_start = pick or source is None
        self.store = RunStore()
        self._generation = source.generation if source is not None else 0
        self.current_alert: dict[str, Any] | None = None  # the alert `n`/`p`/enter last moved to
        self._restarted = False  # the source moved on to a new run after this one had shown steps
        self._last_tick = time.monotonic()
        self._budget = INGEST_BUDGET_S
        self._catching_up = False
        self._drawn: dict[str, Any] = {}
        self._status = SourceStatus()
        self.notes: list[str] = []  # what was said in notifications (tests read it)

    # -- layout ---------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield Static(id="alert-banner")
        yield from compose_tabs()
        yield Timeline(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        # The panels live on the default screen; help and the picker are pushed over it, and a timer tick must
        # still find the panels then (App.query_one would search the screen on top).
        self._main = self.screen
        self.set_class(self.replay, "replay")
        if self.source is not None:
            self.source.start()
        self.set_interval(self.refresh_s, self.tick)
        self.call_after_refresh(self.sync_now, FIRST_FRAME_BUDGET_S)
        if self.pick_at_start:
            self.call_after_refresh(self.action_pick)

    # -- the timer: ingest, play, redraw ------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        changes = self._ingest(self._budget if self.store.last_step() is not None else FIRST_FRAME_BUDGET_S)
        if self.replay and self.playing:
            self._advance(dt)
        self._sync(changes)
        self._first_drawn()
        if self._budget == CATCH_UP_BUDGET_S and not self._catching_up and not self.replay:
            # Live frames are left over: ingest again as soon as this frame is drawn, not a timer period later,
            # so a backlog drains at full speed; keys and resizes are still handled between the passes. (A
            # replay paces itself: its frames wait for the playback position.)
            self._catching_up = True
            self.call_after_refresh(self._catch_up)

    def _catch_up(self) -> None:
        self._catching_up = False
        self.tick()

    def _first_drawn(self) -> None:
        event = getattr(self.source, "first_drawn", None)
        # Once anything was read and drawn: a recording's first frames may hold no step yet (meta, facts, an
        # alert), and the reader then waited its full 3 s for a first screen that was already there.
        if event is not None and not event.is_set() and self.store.version > 0:
            self.call_after_refresh(event.set)  # after this frame is on the screen

    def sync_now(self, budget: float | None = None) -> None:
        """Ingest what is queued (everything, or for `budget` seconds) and redraw, now: the first frame, tests."""
        self._sync(self._ingest(budget), force=True)
        self._first_drawn()

    def _ingest(self, budget: float | None) -> Changes:
        total = Changes()
        src = self.source
        if src is None:
            return total
        deadline = time.perf_counter() + (budget if budget is not None else 1e9)
        left_over = False
        while True:
            if src.generation != self._generation:
                self._generation = src.generation
                self._reset_store()
                total.meta = True
            frames = src.drain(DRAIN_SLICE)
            if not frames:
                # A drain that meets a restart's boundary comes back empty (app_sources._Queue): the new run's
                # frames may follow. Look at the generation again before taking them, so none reaches the old store.
                if src.generation != self._generation:
                    continue
                frames = src.drain(DRAIN_SLICE)
                if not frames:
                    break
            ch = self.store.ingest(frames)
            total.steps |= ch.steps
            total.alerts |= ch.alerts
            total.facts |= ch.facts
            total.meta |= ch.meta
            total.ended |= ch.ended
            total.malformed += ch.malformed
            if time.perf_counter() > deadline:
                left_over = True
                break
        self._budget = CATCH_UP_BUDGET_S if left_over else INGEST_BUDGET_S
        if total.alerts and self.on_alert is not None and src.kind != "replay":
            for alert in list(self.store.alerts.by_key.values()):
                self.on_alert.offer(alert)  # only new, active alerts at its severity go out, once each
        status = src.status
        if status != self._status:
            self._on_status(self._status, status)
            self._status = status
        return total

    def _reset_store(self) -> None:
        # A source that had found no run yet (`accmon run` before its command registers) also "restarts" on
        # finding the first one: nothing was shown, nothing restarted, and the user is not told it did.
        self._restarted = self.store.last_step() is not None
        self.store = RunStore()
        self.rank, self.cursor, self.head, self.span, self.follow = None, None, None, None, True
        self._drawn.clear()
        if self._restarted:
            self.say("the run restarted: showing the new run")

    def _on_status(self, old: SourceStatus, new: SourceStatus) -> None:
        if new.rules == "done" and old.rules != "done":
            final = getattr(self.source, "final_alerts", None)
            if final is not None:
                # Today's diagnosis of the whole file replaces what was recorded and streamed so far (each alert
                # keeps the updates seen of it: the replay shows it as it stood at the playhead).
                self.store.alerts = self.store.alerts.replaced_by(final)
                self._drawn.pop("alerts", None)
        if new.message and new.message != old.message and new.message.startswith("re-attached") and self._restarted:
            self.say(new.message)
        if self.replay and new.loaded and not old.loaded and new.truncated:
            where = f" ({new.problems[0]})" if new.problems else ""
            self.say(f"this recording is truncated{where}: replaying what it holds", severity="warning")

    def _sync(self, changes: Changes | None = None, *, force: bool = False) -> None:
        if not hasattr(self, "_main") or not self._main.is_attached:  # before on_mount, or closing
            return
        try:
            self._sync_panels(force)
        except NoMatches:
            pass  # the panels are not mounted yet, or are going away with the app

    def _sync_panels(self, force: bool) -> None:
        view = self.view()
        data = self.view_data()
        # A sharded model: gradient norms exist only combined across ranks (each rank's are partial), whichever
        # rank is shown.
        sharded = self.store.sharded()
        tab = self._active_tab()
        model_layers = self._model_layers()
        overlay = self._overlay()
        with self.batch_update():
            self._sync_header(force)
            self._sync_banner()
            for wid in TAB_WIDGETS.get(tab, ()):
                w = self._main.query_one(f"#{wid}")
                wdata = sharded if sharded is not None and wid in SHARDED_WIDGETS else data
                if isinstance(w, LineChart):
                    w.show(wdata, view, overlay)
                elif isinstance(w, LayerHeatMap):
                    if wid in SHARDED_WIDGETS:
                        w.set_note("ranks combined: √Σ grad_sq" if sharded is not None else None)
                    w.show(wdata, view, model_layers)
            if tab in ("alerts", "overview"):
                self._sync_alerts(force)
            if tab == "data":
                self._sync_summary(force)
            if tab == "system":
                self._sync_system(force)
            if self.replay:
                self._sync_timeline(view)

    def _overlay(self) -> BaselineOverlay | None:
        """The baseline as the charts draw it, mapped onto the steps of the rank that paces the view."""
        al = self.aligner
        if al is None:
            return None
        live, facts = self.pace_data(), self.store.facts
        if al.align == "step" or al.fallback(live, facts):
            return BaselineOverlay(al.baseline.data, None, ("step",))
        key = (al.align, id(live), live.version if live is not None else -1)
        return BaselineOverlay(al.baseline.data, lambda steps: al.to_baseline(live, facts, steps), key)

    def baseline_line(self) -> str | None:
        """The header's comparison with the baseline, as of the playhead in replay; None without a baseline."""
        if self.aligner is None:
            return None
        data = self.pace_data()
        step = self.head_step() if self.replay else (data.axis.last if data is not None else None)
        return standing(data, self.store.facts, self.aligner, step)

    def action_baseline_align(self) -> None:
        """`b`: align the baseline by step, epoch, samples seen, in turn."""
        if self.aligner is None:
            self.say("no baseline: start with --baseline FILE (a recording of a run that worked)")
            return
        nxt = ALIGNS[(ALIGNS.index(self.aligner.align) + 1) % len(ALIGNS)]
        self.aligner = Aligner(self.aligner.baseline, nxt)
        why = self.aligner.fallback(self.pace_data(), self.store.facts)
        self.say(f"baseline aligned by {nxt}" + (f" — {why}" if why else ""))
        self._sync(force=True)

    def _model_layers(self) -> list[str] | None:
        model = self.store.facts.get("model")
        if isinstance(model, dict) and isinstance(model.get("layers"), list):
            return [str(layer.get("name")) for layer in model["layers"] if isinstance(layer, dict)]
        return None

    def _sync_header(self, force: bool) -> None:
        info = self.header_info()
        vs = self.baseline_line()
        key = (self.store.version, info, self.current_theme.dark, self.size.width,
               int(self.clock()) if info.state == "live" else 0, vs)
        if force or key != self._drawn.get("header"):
            self._drawn["header"] = key
            self._main.query_one(RunHeader).update(header_text(self.store, info, dark=self.current_theme.dark,
                                                               width=self.size.width, vs_baseline=vs))
            tabs = self._main.query_one(TabbedContent)
            n = len(info.alerts) if info.alerts is not None else len(self.store.alerts)
            tabs.get_tab("alerts").label = f"5 Alerts ({n})" if n else "5 Alerts"

    def _sync_summary(self, force: bool) -> None:
        data = self.pace_data()
        key = (self.store.version // 5 if not force else -1, self.rank, self.current_theme.dark)
        if not force and key == self._drawn.get("summary"):
            return
        self._drawn["summary"] = key
        box = self._main.query_one("#summary-box")
        self._main.query_one("#summary", Static).update(summary_text(self.store, data, dark=self.current_theme.dark,
                                                               width=box.size.width or 80))

    def _sync_system(self, force: bool) -> None:
        data = self.pace_data()
        key = (self.store.version // 5 if not force else -1, self.rank, self.current_theme.dark)
        if not force and key == self._drawn.get("system"):
            return
        self._drawn["system"] = key
        self._main.query_one("#system-note", Static).update(system_text(data, self.store.facts,
                                                                        dark=self.current_theme.dark))

    # -- actions ------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("play_pause", "arrow") and self.screen is not getattr(self, "_main", self.screen):
            return False  # space and arrows inside help or the picker belong to it, not to the replay behind
        if action in ("play_pause", "speed", "seek_edge"):
            return self.replay  # live: these keys do nothing, so the footer does not offer them
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # accmon's own actions only: Textual's (its theme picker, its screenshot, its key panel) duplicated
        # `t`, `x` and `?` under other names.
        for key, (tab, what) in enumerate(TAB_NOTES, start=1):
            yield SystemCommand(f"Tab {key}: {tab}", what, lambda tab=tab: self.action_tab(tab))
        for a in self.alert_order():
            yield SystemCommand(f"Go to alert {a.get('id')} (step {a.get('step')})", str(a.get("message", ""))[:120],
                                lambda a=a: self.select_alert(a))
        yield SystemCommand("Zoom in", "Half the steps, every chart", lambda: self.action_zoom(0.5))
        yield SystemCommand("Zoom out", "Twice the steps, every chart", lambda: self.action_zoom(2))
        yield SystemCommand("Toggle theme", "Light or dark", self.action_toggle_theme)
        yield SystemCommand("Quit", "Leave accmon (a run goes on)", self.exit)
        yield SystemCommand("Help: keys and panels", "What every key does and how to read the panels", self.action_help)
        yield SystemCommand("Open a live run", "Pick another run on this host (accmon ls)", self.action_pick)
        yield SystemCommand("Toggle smoothing", "EMA over the raw values", self.action_toggle_ema)
        yield SystemCommand("Smoothing strength", "Cycle 0.6 · 0.9 · 0.99 · 0.999", self.action_ema_strength)
        yield SystemCommand("Toggle log scale", "Loss and accuracy on a log scale", self.action_toggle_log)
        yield SystemCommand("Whole run", "Zoom out to every step", self.action_zoom_all)
        yield SystemCommand("Follow the newest step", "Keep the right edge at the newest step", self.action_follow)
        yield SystemCommand("Next alert", "Move the charts to where the next alert began",
                            lambda: self.action_alert_jump(1))
        yield SystemCommand("Save screenshot (SVG)", "Also PNG when a converter is installed", self.action_screenshot)
        yield SystemCommand("Export series (CSV)", "Every series of every rank", self.action_export_csv)
        yield SystemCommand("Export series (Parquet)", "Every series of every rank (needs pyarrow)",
                            self.action_export_parquet)
        yield SystemCommand("Next rank", "All ranks (median and spread) → rank 0 → rank 1 → … → all",
                            self.action_next_rank)

    def screen_text(self) -> str:
        """The screen as plain text, as a person would read it (tests, and checks over SSH without a terminal).

        The one use of a private Textual API in accmon (the compositor, as `App.export_screenshot` uses it)."""
        console = Console(width=self.size.width, height=self.size.height, file=io.StringIO(), record=True,
                          color_system=None, legacy_windows=False, safe_box=False)
        console.print(self.screen._compositor.render_update(full=True))
        return console.export_text()

    def _say_from_thread(self, line: str) -> None:
        try:
            self.call_from_thread(self.say, line, severity="warning")
        except RuntimeError:
            pass  # the app is closing (or not yet running): nobody to tell

    async def action_quit(self) -> None:
        self.exit(0)

    def on_unmount(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.on_alert is not None:
            self.on_alert.close()
