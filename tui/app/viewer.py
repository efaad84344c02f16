"""`AccmonApp`: the timer that pulls frames from a source into the store, the redraw of what changed, the keys.

What the app shows is computed elsewhere in this package: the window and the playhead (view.py), the alerts'
order and words (alerts.py), the panels (layout.py); screens.py holds help and the picker, files.py what the
export and screenshot keys write.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent

from accmon.probe import registry

from .. import export  # the module, not its names: tests replace export.have_pyarrow
from ..app_sources import LiveSource, Source, SourceStatus
from ..baseline import ALIGNS, Aligner, Baseline, standing
from ..on_alert import AlertCommand
from ..stop_screen import StopScreen, reply_words
from ..store import Changes, RankData, RankGroup, RunStore, alert_message, as_of_step, stop_words
from ..widgets import (
    AlertTable,
    BaselineOverlay,
    HeaderInfo,
    LayerHeatMap,
    LineChart,
    RunHeader,
    Timeline,
    TimelineState,
    View,
    alert_detail,
    header_text,
    summary_text,
    system_text,
)
from . import view as vm
from .alerts import (
    alert_ident,
    alert_order,
    banner_alert,
    banner_text,
    book_key,
    causes_of,
    jump_target,
    layer_kinds,
    no_alert_text,
)
from .files import export_name, svg_to_png, write_series
from .layout import SHARDED_WIDGETS, TAB_NOTES, TAB_WIDGETS, compose_tabs
from .screens import HelpScreen, PickerScreen
from .view import SEEK_FRACTION, SPEEDS

# 5 redraws a second: smooth enough to watch a run, and a redraw of every visible panel costs a few ms at most.
REFRESH_S = 0.2
# Ingest time per tick. When frames are left over (a late join onto a long run, a replay loading) the next tick
# gets the larger budget: the history arrives faster, keys still answer within half a second.
INGEST_BUDGET_S = 0.1
CATCH_UP_BUDGET_S = 0.45
DRAIN_SLICE = 8  # frames per store.ingest call (a frame holds up to a few thousand steps): the budget's grain
FIRST_FRAME_BUDGET_S = 0.03  # until something is drawn: show the first steps now, the rest on the next ticks


class AccmonApp(App[int]):
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

    # The view state, as Textual reactives. None has a watcher: the timer's redraw compares what each panel was
    # drawn from (`_drawn`, the widgets' own keys), so an action that changes three of them redraws once, not
    # three times. The window they give is view.window; the playhead's moves are view.advance and view.head_at.
    rank: var[int | None] = var(None)  # the rank shown; None: all ranks together (one rank: that rank)
    # The view: every time chart shares it (design: zoom and pan move all charts together).
    span: var[float | None] = var(None)  # steps shown; None = the whole run
    follow = var(True)  # the right edge follows the newest step (replay: the playhead)
    x_end = var(0.0)  # the right edge when not following
    cursor: var[int | None] = var(None)  # a step marked on every chart: where the chosen alert began
    ema_on = var(True)
    ema_strength = var(0.9)
    log_y = var(False)
    # Replay: the playhead.
    head: var[float | None] = var(None)  # None: at the newest step read (follows the file while it loads)
    playing = var(False)
    speed_i = var(1)  # index into view.SPEEDS

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

    @property
    def replay(self) -> bool:
        return self.source is not None and self.source.kind == "replay"

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
        if src.generation != self._generation:
            self._generation = src.generation
            self._reset_store()
            total.meta = True
        deadline = time.perf_counter() + (budget if budget is not None else 1e9)
        left_over = False
        while True:
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

    def say(self, message: str, *, severity: str = "information") -> None:
        self.notes.append(message)
        if self.is_running:
            self.notify(message, severity=severity)  # type: ignore[arg-type]

    # -- which rank ----------------------------------------------------------------------------------------------
    def view_data(self) -> RankData | RankGroup | None:
        """What the panels show: one rank, or every rank together (a run with one rank: that rank, as it is)."""
        if self.rank is not None:
            return self.store.ranks.get(self.rank)
        ranks = self.store.ranks
        if len(ranks) <= 1:
            return next(iter(ranks.values()), None)
        return self.store.all_ranks()

    def pace_data(self) -> RankData | None:
        """The rank whose clock paces replay and whose facts the header and data tab show: the one shown, or
        the lowest (rank 0) when all are shown."""
        if self.rank is not None:
            return self.store.ranks.get(self.rank)
        return self.store.ranks[min(self.store.ranks)] if self.store.ranks else None

    # -- replay playhead -----------------------------------------------------------------------------------
    def _bounds(self) -> tuple[int, int] | None:
        data = self.view_data()
        if data is None or data.axis.first is None or data.axis.last is None:
            return None
        return data.axis.first, data.axis.last

    def head_step(self) -> int | None:
        b = self._bounds()
        return None if b is None else vm.head_at(self.head, *b)

    def _advance(self, dt: float) -> None:
        b = self._bounds()
        if b is None:
            return
        first, last = b
        head = vm.advance(float(self.head_step() or first), first, last, SPEEDS[self.speed_i], self.pace_data(), dt)
        if head >= last and self._status.loaded:
            self.playing = False  # at the end of a recording read whole
        self.head = head

    # -- view --------------------------------------------------------------------------------------------
    def view(self) -> View:
        b = self._bounds()
        dark = self.current_theme.dark
        markers = tuple(self.store.alerts.steps())
        common: dict[str, Any] = dict(ema=self.ema_on, ema_strength=self.ema_strength, log_y=self.log_y,
                                      cursor=self.cursor, markers=markers, dark=dark)
        if b is None:
            return View(0, 1, **common)
        first, last = b
        head = self.head_step() if self.replay else None
        if self.replay and self.head is None:
            head = None  # at the end: nothing hidden
        x0, x1 = vm.window(first, last, head, span=self.span, follow=self.follow, x_end=self.x_end)
        return View(x0, x1, head=head, **common)

    def _active_tab(self) -> str:
        try:
            return self._main.query_one(TabbedContent).active or "overview"
        except Exception:
            return "overview"

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

    def header_info(self) -> HeaderInfo:
        st = self._status
        # Steps the probe's queue dropped, live (heartbeats say it): lost for good, and said in the header.
        self.store.live_dropped = max(self.store.live_dropped, getattr(st, "dropped_steps", 0) or 0)
        status = self.store.status()
        note = st.message
        if note and note.startswith("re-attached") and not self._restarted:
            note = None
        if self.source is None:
            state = "waiting"
            note = note or "no run attached: press o to pick a live run"
        elif self.replay:
            state = "replay"
            if status == "crashed":
                note = f"recorded run crashed: {self.store.error()}"
            elif (stop := self.store.stopped()) is not None and (
                    stop["step"] is None or (self.head_step() or 0) >= stop["step"]):
                note = f"recorded run {stop_words(stop)}"
            if st.truncated:
                extra = f" ({st.problems[0]})" if st.problems else " (no end frame)"
                note = (note + " · " if note else "") + "truncated recording" + extra
            elif not st.loaded:
                note = note or "reading the recording…"
            if st.rules == "running":
                note = (note + " · " if note else "") + "diagnosing with today's rules…"
        elif status is not None:
            state = status
        elif st.state == "gone":
            state = "crashed"
            note = st.message or "the run's process is gone without an end frame (killed?)"
        elif st.state == "ended":
            state = "finished"
        else:
            state = st.state
        head = self.head_step() if self.replay and self.head is not None else None
        shown = None if head is None else tuple(a.get("severity", "info") for _, a in self.visible_alerts())
        return HeaderInfo(state=state, rank=self.rank, dropped_live=st.dropped_live, note=note, head=head,
                          now=self.clock() if not self.replay else None, alerts=shown)

    def _sync_banner(self) -> None:
        """One line with the alert in question — the one `n` moved to, else the most severe shown — so that the
        diagnosis is on screen at any size (at 80×24 the alert list lives on its own tab)."""
        items = [a for _, a in self.visible_alerts()]
        banner = self._main.query_one("#alert-banner", Static)
        if not items:
            banner.display = False
            return
        cur = banner_alert(items, self.current_alert)
        key = (alert_ident(cur), alert_message(cur), len(items), self.current_theme.dark, self.size.width)
        if key == self._drawn.get("banner") and banner.display:
            return
        self._drawn["banner"] = key
        banner.update(banner_text(cur, len(items), self.current_theme.dark))
        banner.display = True

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

    def visible_alerts(self) -> list[tuple[tuple, dict[str, Any]]]:
        up_to = self.head_step() if self.replay and self.head is not None else None
        return self.store.alerts.newest_first(up_to_step=up_to)

    def _sync_alerts(self, force: bool) -> None:
        items = self.visible_alerts()
        # With no alert selected the pane says how the run stands (a clean finish): its state is in the key too.
        key = (self.store.alerts.version, len(items), self.current_theme.dark, self.store.status(),
               self._status.loaded, self._status.state, self.head is None,
               tuple(as_of_step(a) for _, a in items))  # replay: which update of each alert the playhead shows
        if not force and key == self._drawn.get("alerts"):
            return
        self._drawn["alerts"] = key
        dark = self.current_theme.dark
        for table_id, detail_id in (("#alert-table", "#alert-detail"), ("#side-alerts", "#side-detail")):
            table = self._main.query_one(table_id, AlertTable)
            table.sync(items, dark)
            self._main.query_one(detail_id, Static).update(self.detail(table.selected_alert()))

    def detail(self, alert: dict[str, Any] | None) -> Text:
        """The detail pane for `alert`: with the cause alerts beside a symptom, layers with their kinds; with no
        alert, what the rules found so far (a finished clean run says so)."""
        dark = self.current_theme.dark
        if alert is None:
            return self._no_alert_text(dark)
        as_of = None
        head = self.head_step() if self.replay and self.head is not None else None
        if head is not None:
            # The alert as it stood at the playhead: its update as of then, not its newest (issue 21 item 9).
            alert = self.store.alerts.at(book_key(alert), head) or alert
            if as_of_step(alert) > head:  # even its first update is from after the playhead: say so
                as_of = (as_of_step(alert), head)
        causes = causes_of(alert, self.alert_order(), head, self.store.alerts.at)
        return alert_detail(alert, dark, causes=causes[:4], layer_kinds=layer_kinds(self.store.facts), as_of=as_of)

    def _no_alert_text(self, dark: bool) -> Text:
        step = self.head_step() if self.replay else self.store.last_step()
        ended = step is not None and (self.header_info().state in ("finished",) or bool(
            self.replay and self._status.loaded and self.store.status() == "finished"
            and (self.head is None or step >= (self._bounds() or (0, 0))[1])))
        shown = step is not None and bool(self.store.alerts.newest_first(up_to_step=step if self.replay else None))
        return no_alert_text(step, data=self.pace_data(), any_shown=shown, ended=ended, dark=dark)

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

    def _sync_timeline(self, view: View) -> None:
        b = self._bounds()
        first, last = b if b is not None else (0, 0)
        st = self._status
        note = ""
        if st.truncated:
            note = "truncated recording: " + (st.problems[0] if st.problems else "no end frame")
        elif not st.loaded:
            note = "reading…"
        speed = SPEEDS[self.speed_i]
        self._main.query_one(Timeline).show(TimelineState(
            first=first, last=last, head=self.head_step() or first, loaded=last, playing=self.playing,
            speed="max" if speed is None else f"×{speed}", markers=view.markers, note=note, dark=view.dark))

    # -- actions ------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("play_pause", "arrow") and self.screen is not getattr(self, "_main", self.screen):
            return False  # space and arrows inside help or the picker belong to it, not to the replay behind
        if action in ("play_pause", "speed", "seek_edge"):
            return self.replay  # live: these keys do nothing, so the footer does not offer them
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_tab(self, tab: str) -> None:
        # Focus leaves the pane first: TabbedContent shows the pane that holds the focused widget, so with the
        # focus in the alert table `2` switched to Gradients and straight back (issue 21 item 2).
        focused = self.focused
        if focused is not None and focused.screen is self._main:
            self.set_focus(None)
        self._main.query_one(TabbedContent).active = tab
        self._sync(force=True)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._sync(force=True)

    def action_play_pause(self) -> None:
        if not self.replay:
            return
        b = self._bounds()
        if not self.playing and b is not None and self.head_step() == b[1] and self._status.loaded:
            self.head = float(b[0])  # at the end: play again from the start
        if self.head is None and b is not None:
            self.head = float(b[1])
        self.playing = not self.playing
        self._last_tick = time.monotonic()  # play from now: no jump for the time spent paused
        self._sync()

    def action_speed(self, delta: int) -> None:
        self.speed_i = max(0, min(len(SPEEDS) - 1, self.speed_i + delta))
        self._sync()

    def action_arrow(self, amount: int) -> None:
        if self.replay:
            self._seek_by(amount * SEEK_FRACTION)
        else:
            self.action_pan(amount)

    def _seek_by(self, fraction: float) -> None:
        b = self._bounds()
        if b is None:
            return
        first, last = b
        cur = self.head_step()
        self.seek((last if cur is None else cur) + fraction * max(1, last - first))

    def seek(self, step: float) -> None:
        """Move the replay playhead (clamped to what has been read)."""
        b = self._bounds()
        if b is None:
            return
        self.head = float(round(min(max(step, b[0]), b[1])))
        self._sync()

    def action_seek_edge(self, edge: int) -> None:
        b = self._bounds()
        if b is not None:
            self.seek(b[edge])

    def on_timeline_seek(self, event: Timeline.Seek) -> None:
        self.seek(event.step)

    def _run_span(self) -> float:
        b = self._bounds()
        return float(max(1, b[1] - b[0])) if b is not None else 1.0

    def action_zoom(self, factor: float) -> None:
        v = self.view()
        span, x_end = vm.zoomed(v.x0, v.x1, factor, follow=self.follow, x_end=self.x_end, run_span=self._run_span())
        if span is None:
            self.action_zoom_all()
            return
        self.span, self.x_end = span, x_end
        self._sync()

    def action_zoom_all(self) -> None:
        self.span, self.follow = None, True
        self._sync()

    def action_pan(self, direction: int) -> None:
        v = self.view()
        b = self._bounds()
        edge = self.head_step() if self.replay else None
        right = None if b is None else (edge if edge is not None else b[1])
        self.span, self.x_end, self.follow = vm.panned(v.x0, v.x1, direction, span=self.span, right_edge=right)
        self._sync()

    def action_follow(self) -> None:
        self.follow = True
        self.cursor = None
        self._sync()

    def action_toggle_ema(self) -> None:
        self.ema_on = not self.ema_on
        self._sync()

    def action_ema_strength(self) -> None:
        self.ema_strength = vm.next_strength(self.ema_strength)
        self.ema_on = True
        self._sync()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._sync()

    def action_next_rank(self) -> None:
        """All ranks → rank 0 → rank 1 → … → all ranks (a run with one rank: nothing to cycle)."""
        ranks = sorted(self.store.ranks)
        if len(ranks) > 1:
            self.rank = vm.next_rank(ranks, self.rank)
            self._sync(force=True)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"
        for heat in self._main.query(LayerHeatMap):
            heat.on_mount()
        self._sync(force=True)

    # -- alerts ---------------------------------------------------------------------------------------------
    def goto_alert(self, alert: dict[str, Any]) -> None:
        """Move every chart to where the alert began (replay: the playhead too) and mark the step."""
        self.current_alert = alert
        step = int(alert.get("step", -1))
        b = self._bounds()
        if step < 0 or b is None:
            return
        first, last = b
        self.cursor = step
        if self.replay:
            self.head = float(min(max(step, first), last))
            self.follow = True
        else:
            span = self.span if self.span is not None else max(20.0, (last - first) / 4)
            self.span = span
            self.x_end = step + span / 2
            self.follow = False
        self._sync(force=True)

    def alert_order(self) -> list[dict[str, Any]]:
        """Alerts in the order `n` walks them: by step; within a step the causes before the symptoms they
        explain (dead_relu before accuracy_stuck, the rules' own order); then id and rank, so that no two alerts
        tie (a sort by (step, id) compared by step alone never reached some of them: issue 21 item 3)."""
        return alert_order(self.store.alerts.by_key.values())

    def action_alert_jump(self, direction: int) -> None:
        alerts = self.alert_order()
        if not alerts:
            self.say("no alerts")
            return
        here = self.cursor if self.cursor is not None else (self.head_step() if self.replay else None)
        target = jump_target(alerts, direction, current=self.current_alert, cursor=self.cursor, here=here,
                             replay=self.replay)
        self._select_in_tables(target)
        self.goto_alert(target)

    def select_alert(self, alert: dict[str, Any]) -> None:
        """Select `alert` in the tables and move every chart to where it began."""
        self._select_in_tables(alert)
        self.goto_alert(alert)

    def _select_in_tables(self, alert: dict[str, Any]) -> None:
        for table in self._main.query(AlertTable):
            for key, a in table.alerts.items():
                if a is alert or (a.get("id"), a.get("step"), a.get("rank")) == (alert.get("id"), alert.get("step"),
                                                                                  alert.get("rank")):
                    try:
                        table.move_cursor(row=table.get_row_index(key))
                    except Exception:
                        pass

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if isinstance(table, AlertTable):
            # ↑ on an empty table (every healthy run has one) highlights no row: its key is None.
            key = event.row_key.value if event.row_key is not None else None
            detail = "#alert-detail" if table.id == "alert-table" else "#side-detail"
            # A highlight queued while the app closes can arrive after the detail pane is gone: nothing to show.
            for pane in self._main.query(detail).results(Static):
                pane.update(self.detail(table.alerts.get(str(key)) if key is not None else None))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        if isinstance(table, AlertTable) and event.row_key is not None:
            alert = table.alerts.get(str(event.row_key.value))
            if alert is not None:
                if self._active_tab() == "alerts":
                    # Enter: take me there, to the charts. Focus leaves the table first, or the tabs would
                    # switch back to the pane that holds the focused widget.
                    self.set_focus(None)
                    self._main.query_one(TabbedContent).active = "overview"
                self.goto_alert(alert)

    # -- runs -----------------------------------------------------------------------------------------------
    def action_stop_run(self) -> None:
        """`S`: ask, then ask the live run to stop at its next step (tui/stop_screen.py)."""
        request = getattr(self.source, "request_stop", None)
        if request is None or self.replay:
            self.say("only a live run can be stopped", severity="warning")
            return
        if isinstance(self.screen, StopScreen):
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                ranks = request("S key")
                self.say(f"asking the run to stop ({ranks} rank{'s' if ranks != 1 else ''})…" if ranks else
                         "not connected to the run yet: nothing was asked", severity="information" if ranks else "warning")
                if ranks:
                    self._stop_asked_at: float = time.monotonic()
                    self._stop_timer = self.set_interval(0.2, self._stop_answered)

        self.push_screen(StopScreen(self.store.name or getattr(self.source, "name", None) or "the run"), confirmed)

    def _stop_answered(self) -> None:
        replies: list[dict | None] = getattr(self.source, "stop_replies", lambda: [])()
        words = reply_words(replies)
        done = words is not None and (all(r is not None for r in replies) or "refused" in words)
        if done or time.monotonic() - self._stop_asked_at > 10.0:
            self._stop_timer.stop()
            self.say(words or "the run did not answer the stop request",
                     severity="warning" if words is None or "refused" in words else "information")

    def action_pick(self) -> None:
        if isinstance(self.screen, PickerScreen):
            return

        def chosen(entries: list[registry.RunEntry] | None) -> None:
            if entries:
                self.switch_source(self.attach(entries))

        self.push_screen(PickerScreen(self.list_runs), chosen)

    def switch_source(self, source: Source) -> None:
        old = self.source
        self.source = source
        self._generation = source.generation
        self.store = RunStore()
        self._status = SourceStatus()
        self.rank, self.cursor, self.head, self.span, self.follow, self.playing = None, None, None, None, True, False
        self._drawn.clear()
        self.set_class(self.replay, "replay")
        source.start()
        if old is not None:
            self._close_source(old)
        self.sync_now()

    @work(thread=True, group="close", exit_on_error=False)
    def _close_source(self, source: Source) -> None:
        source.close()

    # -- export -------------------------------------------------------------------------------------------------
    def _export_name(self, ext: str) -> Path:
        return export_name(self.export_dir, self.store.name, self.head_step(), ext)

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """`x`: an SVG of the screen (and a PNG when a converter is installed), named after the run and step,
        in the export folder. (Textual's own action of this name takes a file name and folder: given, they win.)"""
        target = self._export_name("svg")
        if filename is not None or path is not None:
            target = Path(path or target.parent) / (filename or target.name)
        path = self.save_screenshot(filename=target.name, path=str(target.parent))
        self.say(f"screenshot saved: {path}")
        self._to_png(path)

    @work(thread=True, group="export", exit_on_error=False)
    def _to_png(self, svg: str) -> None:
        png = svg_to_png(svg)
        if png:
            self.call_from_thread(self.say, f"PNG saved: {png}")

    def action_export_csv(self) -> None:
        self._export(self._export_name("csv"), "csv")

    def action_export_parquet(self) -> None:
        if not export.have_pyarrow():
            self.say(f"Parquet export {export.PARQUET_HINT}", severity="error")
            return
        self._export(self._export_name("parquet"), "parquet")

    @work(thread=True, group="export", exit_on_error=False)
    def _export(self, target: Path, fmt: str) -> None:
        what = "CSV" if fmt == "csv" else "Parquet"
        try:
            write_series(self.source, self.store, target, fmt)
        except OSError as exc:
            self.call_from_thread(self.say, f"{what} export failed: {exc.strerror or exc}", severity="error")
            return
        self.call_from_thread(self.say, f"series saved: {target}")

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
