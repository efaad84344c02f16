"""The `accmon` terminal app: live panels, alerts you can act on, replay with a timeline — at any run length.

Frames come from a source (a live run, a recording, a test) that does its I/O on its own thread. The app pulls
them on a timer (`REFRESH_S`), ingests them into the columnar store under a time budget, and redraws only the
widgets of the visible tab whose data or view changed. Charts read decimated summaries, so a redraw costs the
same at step 1,000 and at step 10,000,000.

Entry points for the command line (tui/cli.py, tui/runner.py): `run_live`, `run_live_for_process`,
`run_replay`, `run_picker`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from accmon.probe import registry
from accmon.probe.rules import SEVERITY_RANK
from accmon.probe.rules.catalogue import ALERT_IDS

from .app_sources import (
    LiveSource,
    QueueSource,
    ReplaySource,
    Source,
    SourceStatus,
    age_words,
    group_runs,
    peek_cells,
    peek_runs,
    run_peek,
)
from .baseline import ALIGNS, Aligner, Baseline, standing
from .check import printable
from .on_alert import AlertCommand
from .store import Changes, RankData, RankGroup, RunStore, alert_message, as_of_step, stop_words
from .widgets import (
    AlertTable,
    BaselineOverlay,
    ChartSpec,
    HeaderInfo,
    HeatSpec,
    LayerHeatMap,
    LineChart,
    RunHeader,
    SeriesSpec,
    Timeline,
    TimelineState,
    View,
    alert_detail,
    fmt,
    header_text,
    severity_text,
    summary_text,
    system_text,
)
from .widgets.palette import palette

# 5 redraws a second: smooth enough to watch a run, and a redraw of every visible panel costs a few ms at most.
REFRESH_S = 0.2
# Ingest time per tick. When frames are left over (a late join onto a long run, a replay loading) the next tick
# gets the larger budget: the history arrives faster, keys still answer within half a second.
INGEST_BUDGET_S = 0.1
CATCH_UP_BUDGET_S = 0.45
DRAIN_SLICE = 8  # frames per store.ingest call (a frame holds up to a few thousand steps): the budget's grain
FIRST_FRAME_BUDGET_S = 0.03  # until something is drawn: show the first steps now, the rest on the next ticks
SPEEDS: tuple[int | None, ...] = (1, 10, 100, 1000, None)  # replay ×1 … ×1000 and max (None)
# max: at least ×1000, and at least 1/150 of the run per tick — the whole run in 30 s at 5 ticks a second.
MAX_SPEED_FRACTION = 1 / 150
EMA_STRENGTHS = (0.6, 0.9, 0.99, 0.999)
SEEK_FRACTION = 0.01  # ←/→ in replay: 1 % of the run; shift: 10 %
# Alerts that report what a person sees rather than why: their detail names the cause alerts beside them.
SYMPTOMS = frozenset({"accuracy_stuck", "single_class_prediction", "val_loss_stagnating", "lr_too_low"})
# The rules' evaluation order puts causes before the symptoms that consult them (probe/rules/catalogue.py):
# `n` walks alerts of one step in that order, so the root cause comes first.
CAUSE_ORDER = {aid: i for i, aid in enumerate(ALERT_IDS)}

CHARTS: dict[str, ChartSpec] = {
    "chart-acc": ChartSpec("accuracy", (SeriesSpec("acc", "train", 0), SeriesSpec("val_acc", "val", 1)), unit_range=True),
    "chart-loss": ChartSpec("loss", (SeriesSpec("loss", "train", 0), SeriesSpec("val_loss", "val", 1))),
    "chart-grad": ChartSpec("gradient norm", (SeriesSpec("grad_norm", "global", 2),), log=True),
    "chart-lr": ChartSpec("learning rate", (SeriesSpec("lr", "lr", 3),), log=True, smooth=False),
    "chart-grad2": ChartSpec("gradient norm", (SeriesSpec("grad_norm", "global", 2),
                                               SeriesSpec("nonfinite_grads", "non-finite", 5)), log=True),
    "chart-update": ChartSpec("update ratio ‖Δw‖/‖w‖", (SeriesSpec("update_ratio", "all layers", 3),), log=True),
    "chart-lr2": ChartSpec("learning rate", (SeriesSpec("lr", "lr", 3),), log=True, smooth=False),
    "chart-input": ChartSpec("input batch", (SeriesSpec("input_mean", "mean", 0), SeriesSpec("input_std", "std", 1)),
                             smooth=False),
    "chart-time": ChartSpec("seconds per step · of which waiting for data",
                            (SeriesSpec("step_time", "step", 0), SeriesSpec("data_wait", "data wait", 1)), log=True),
    "chart-rate": ChartSpec("throughput", (SeriesSpec("samples_per_s", "samples/s", 2),
                                           SeriesSpec("tokens_per_s", "tokens/s", 3)), log=True),
    "chart-mem": ChartSpec("memory, bytes", (SeriesSpec("rss", "process RSS", 0), SeriesSpec("cuda_allocated", "GPU allocated", 2),
                                             SeriesSpec("cuda_reserved", "GPU reserved", 3)), smooth=False),
    "chart-gpu": ChartSpec("GPU (NVML)", (SeriesSpec("gpu_util", "util %", 0), SeriesSpec("gpu_temp", "°C", 1),
                                          SeriesSpec("gpu_power", "W", 2)), smooth=False),
}
HEATS: dict[str, HeatSpec] = {
    "heat-grad": HeatSpec("gradient norm per layer · blue: vanishing · orange: exploding", "grad_norm/"),
    "heat-dead": HeatSpec("dead fraction per layer (outputs exactly 0)", "act_zero/", log=False, reduce="mean"),
    "heat-sat": HeatSpec("saturated fraction per layer (outputs at the activation's limits)", "act_sat/", log=False,
                         reduce="mean"),
}
# Widgets that show gradient norms: for a sharded model (FSDP) they read the norms combined across ranks.
SHARDED_WIDGETS = frozenset({"chart-grad", "chart-grad2", "heat-grad"})
TAB_WIDGETS = {
    "overview": ("chart-acc", "chart-loss", "chart-grad", "chart-lr"),
    "gradients": ("chart-grad2", "heat-grad", "chart-update"),
    "activations": ("heat-dead", "heat-sat", "chart-lr2"),
    "data": ("chart-input",),
    "alerts": (),
    "system": ("chart-time", "chart-rate", "chart-mem", "chart-gpu"),
}

HELP = """\
**Why is my accuracy zero, or stuck?** The panels show the run; the alerts say what is wrong, the fix and the
evidence. `n` moves every chart to where the next alert began.

```
n p     next / previous alert: charts go where it began
1-6     overview · gradients · activations · data · alerts · system
tab     into the alert list: ↑ ↓ choose, enter goes there
+ - 0   zoom in / out along steps · whole run
< >     pan along steps (live: ← → too)
f       follow the newest step
e E     smoothing on/off · stronger     g  log scale
r       ranks: all → rank 0 → rank 1 → … → all
x c C   screenshot (SVG) · series as CSV · as Parquet
b       baseline (--baseline): align by step → epoch → samples seen
o       another live run    t  theme    ctrl+p  palette
S       stop the live run at its next step (asks first)
?       help (j k scroll)   q or ctrl+c quit
space   replay: play/pause  [ ] slower/faster
← →     replay: seek 1 % (shift: 10 %)  home end
```

**Mouse**: click a tab, an alert, the replay timeline (to seek); scroll a pane. Replay speeds: ×1 … ×1000, max.

**Colours and marks**: ▲ on a time axis marks an alert (red ✖ critical, orange ▲ warning, blue ● info);
✕ marks NaN or Inf values (and values past 1e300). Time charts draw, per column of braille dots, the min–max
span of the steps it covers (a spike in ten million steps still shows), the smoothed line over the faded raw
one. Heat maps colour each layer per time column: gradient norms on a log scale (blue small, grey middle,
orange large), fractions 0–1 (viridis).

**Several ranks** (DDP, torchrun): all ranks together by default — the bright line is the median across ranks,
the faded band the lowest to highest value any rank had; `r` shows one rank at a time. A sharded model (FSDP)
publishes each rank's partial sums of squares: its gradient norms are combined across ranks (√Σ) in every view.

**Baseline** (`--baseline good.accmon`): every chart draws the baseline run's series as a dim grey line under
this run's (named on the chart's bottom border, "┈ baseline: train, val"), beside the same step, the same point
of the same epoch, or the same number of samples seen (`b`, or `--align`); the header's last line says how this
run stands against it.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and what the panels mean."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close"),
                Binding("j,down", "scroll(1)", "Down", show=False), Binding("k,up", "scroll(-1)", "Up", show=False),
                Binding("space,pagedown", "scroll(10)", "Page down", show=False)]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 100%; max-height: 40; border: round $accent;
                                  background: $surface; border-title-align: center; }
    HelpScreen MarkdownFence { margin: 0; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it costs ~80 ms of import: only when help is asked for

        with VerticalScroll() as box:
            box.border_title = "accmon help · escape closes"
            yield Markdown(HELP)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)


class PickerScreen(ModalScreen["list[registry.RunEntry] | None"]):
    """Live runs on this host (what `accmon ls` lists); enter attaches. Refreshed every second, off the UI loop."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical { width: 90%; max-width: 130; height: 70%; border: round $accent; background: $surface; }
    PickerScreen #picker-note { height: auto; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, list_runs: Callable[[], list[registry.RunEntry]] = registry.list_runs) -> None:
        super().__init__()
        self.list_runs = list_runs
        self.runs: dict[str, list[registry.RunEntry]] = {}

    def compose(self) -> ComposeResult:
        self.table: DataTable = DataTable(id="picker-table", cursor_type="row")
        self.note = Static("Live runs on this host — enter to attach, escape to cancel", id="picker-note")
        with Vertical():
            yield self.note
            yield self.table

    def on_mount(self) -> None:
        for label, key in (("run", "run"), ("name", "name"), ("ranks", "ranks"), ("step", "step"), ("status", "status"),
                           ("alerts", "alerts"), ("age", "age"), ("pid", "pid"), ("command", "cmd")):
            self.table.add_column(label, key=key)
        self.scan()
        self.set_interval(1.0, self.scan)

    @work(thread=True, exclusive=True, group="picker", exit_on_error=False)
    def scan(self) -> None:
        entries = self.list_runs()
        peeks = peek_runs(entries)  # each rank's step, status and alerts: at most PEEK_TIMEOUT_S for all together
        peeks.update(getattr(self.list_runs, "peeks", None) or {})  # another host's, as its accmon answered them
        self.app.call_from_thread(self._show, entries, peeks)

    def _show(self, entries: list[registry.RunEntry], peeks: dict | None = None) -> None:
        if not self.is_attached:
            return  # dismissed while the scan ran
        table = self.table
        runs = {r.run_id: r.entries for r in group_runs(entries)}
        for gone in [k for k in self.runs if k not in runs]:
            table.remove_row(gone)
        now = time.time()
        for run_id, es in runs.items():
            e = es[0]
            step, status, alerts = peek_cells(run_peek(es, peeks or {}))
            # What a run's registry entry says is a peer's text: escaped, and never read as Rich markup.
            cells = (Text(printable(run_id)), Text(printable(e.name)), str(len(es)), Text(step, justify="right"),
                     status, alerts, age_words(now - e.started), str(e.pid), Text(printable(" ".join(e.cmd)[:60])))
            if run_id not in self.runs:
                table.add_row(*cells, key=run_id)
            else:
                for key, cell in (("ranks", cells[2]), ("step", cells[3]), ("status", cells[4]), ("alerts", cells[5]),
                                  ("age", cells[6])):
                    table.update_cell(run_id, key, cell)
        self.runs = runs
        self.note.update(
            "Live runs on this host — enter to attach, escape to cancel" if runs else
            "No live run on this host yet (start one with `accmon run -- python train.py`); waiting…")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entries = self.runs.get(str(event.row_key.value))
        if entries:
            self.dismiss(entries)


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
        self.rank: int | None = None  # the rank shown; None: all ranks together (one rank: that rank)
        # The view: every time chart shares it (design: zoom and pan move all charts together).
        self.span: float | None = None  # steps shown; None = the whole run
        self.follow = True
        self.x_end: float = 0.0
        self.cursor: int | None = None
        self.current_alert: dict[str, Any] | None = None  # the alert `n`/`p`/enter last moved to
        self._restarted = False  # the source moved on to a new run after this one had shown steps
        self.ema_on = True
        self.ema_strength = 0.9
        self.log_y = False
        # Replay: the playhead.
        self.head: float | None = None  # None: at the newest step read (follows the file while it loads)
        self.playing = False
        self.speed_i = 1
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
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("1 Overview", id="overview"):
                with Horizontal(id="overview-body"):
                    with Vertical(id="overview-charts"):
                        with Horizontal(classes="chart-row"):
                            yield LineChart(CHARTS["chart-acc"], id="chart-acc")
                            yield LineChart(CHARTS["chart-loss"], id="chart-loss")
                        with Horizontal(classes="chart-row", id="overview-row2"):
                            yield LineChart(CHARTS["chart-grad"], id="chart-grad")
                            yield LineChart(CHARTS["chart-lr"], id="chart-lr")
                    with Vertical(id="overview-side"):
                        yield AlertTable(id="side-alerts")
                        with VerticalScroll(id="side-detail-box"):
                            yield Static(id="side-detail")
            with TabPane("2 Gradients", id="gradients"):
                with Vertical():
                    yield LineChart(CHARTS["chart-grad2"], id="chart-grad2")
                    yield LayerHeatMap(HEATS["heat-grad"], id="heat-grad")
                    yield LineChart(CHARTS["chart-update"], id="chart-update")
            with TabPane("3 Activations", id="activations"):
                with Vertical():
                    yield LayerHeatMap(HEATS["heat-dead"], id="heat-dead")
                    yield LayerHeatMap(HEATS["heat-sat"], id="heat-sat")
                    yield LineChart(CHARTS["chart-lr2"], id="chart-lr2")
            with TabPane("4 Data", id="data"):
                with Horizontal():
                    with VerticalScroll(id="summary-box"):
                        yield Static(id="summary")
                    yield LineChart(CHARTS["chart-input"], id="chart-input")
            with TabPane("5 Alerts", id="alerts"):
                with Horizontal():
                    yield AlertTable(id="alert-table")
                    with VerticalScroll(id="detail-box"):
                        yield Static(id="alert-detail")
            with TabPane("6 System", id="system"):
                with Vertical():
                    yield Static(id="system-note")
                    with Horizontal(classes="chart-row"):
                        yield LineChart(CHARTS["chart-time"], id="chart-time")
                        yield LineChart(CHARTS["chart-rate"], id="chart-rate")
                    with Horizontal(classes="chart-row"):
                        yield LineChart(CHARTS["chart-mem"], id="chart-mem")
                        yield LineChart(CHARTS["chart-gpu"], id="chart-gpu")
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
        if b is None:
            return None
        if self.head is None:
            return b[1]
        return int(round(min(max(self.head, b[0]), b[1])))

    def _advance(self, dt: float) -> None:
        b = self._bounds()
        if b is None:
            return
        first, last = b
        head = float(self.head_step() or first)
        speed = SPEEDS[self.speed_i]
        data = self.pace_data()
        if speed is None:
            step = max((last - first) * MAX_SPEED_FRACTION, self._paced(data, head, dt * 1000) - head, 1.0)
            head += step
        else:
            head = self._paced(data, head, dt * speed)
        if head >= last:
            head = last
            if self._status.loaded:
                self.playing = False
        self.head = head

    @staticmethod
    def _paced(data: Any, head: float, run_seconds: float) -> float:
        """The step the run reached `run_seconds` of its own time after `head` (its own pace, from frame times)."""
        t = data.time_at_step(head)
        if t is None:
            return head + run_seconds * 100  # no times recorded: 100 steps a second at ×1
        nxt = data.step_at_time(t + run_seconds)
        if nxt is None or nxt <= head:
            return head + max(run_seconds * 1e-3, 1e-3)  # a pause in the run: creep on, never stand still
        return float(nxt)

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
        right = head if head is not None else last
        x0: float
        x1: float
        if self.span is None:
            x0, x1 = first, max(last, first + 1)
        else:
            x1 = right if self.follow else self.x_end
            x0 = x1 - self.span
        return View(float(x0), float(max(x1, x0 + 1)), head=head, **common)

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
        cur = self.current_alert
        if cur is None or _alert_ident(cur) not in {_alert_ident(a) for a in items}:
            cur = max(items, key=lambda a: (SEVERITY_RANK.get(str(a.get("severity", "info")), 0),
                                            -CAUSE_ORDER.get(str(a.get("id")), 99), -a.get("step", 0)))
        key = (_alert_ident(cur), alert_message(cur), len(items), self.current_theme.dark, self.size.width)
        if key == self._drawn.get("banner") and banner.display:
            return
        self._drawn["banner"] = key
        from rich.style import Style

        pal = palette(self.current_theme.dark)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append_text(severity_text(cur, self.current_theme.dark))
        t.append(f" {cur.get('id')}", style=Style(bold=True))
        t.append(f" @{cur.get('step')}: ", style=Style(color=pal.dim))
        t.append(alert_message(cur))
        more = len(items) - 1
        t.append(f"  · {more} more: n/p" if more else "  ", style=Style(color=pal.dim))
        t.append(" · 5: details", style=Style(color=pal.dim))
        banner.update(t)
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
            key = (alert.get("id"), alert.get("rank") or 0, str(alert.get("cause", "")))
            alert = self.store.alerts.at(key, head) or alert
            if as_of_step(alert) > head:  # even its first update is from after the playhead: say so
                as_of = (as_of_step(alert), head)
        causes = []
        if alert.get("id") in SYMPTOMS:
            up_to = self.head_step() if self.replay and self.head is not None else None
            causes = [a for a in self.alert_order() if a.get("id") not in SYMPTOMS and a.get("id") != alert.get("id")
                      and (up_to is None or a.get("step", 0) <= up_to)
                      and a.get("step", 0) <= max(alert.get("step", 0), alert.get("last_step") or 0)]
            if up_to is not None:  # each cause as it stood at the playhead too
                causes = [self.store.alerts.at((c.get("id"), c.get("rank") or 0, str(c.get("cause", ""))), up_to) or c
                          for c in causes]
        kinds = {}
        model = self.store.facts.get("model")
        if isinstance(model, dict) and isinstance(model.get("layers"), list):
            kinds = {str(layer.get("name")): str(layer.get("kind")) for layer in model["layers"]
                     if isinstance(layer, dict) and layer.get("kind")}
        return alert_detail(alert, dark, causes=causes[:4], layer_kinds=kinds, as_of=as_of)

    def _no_alert_text(self, dark: bool) -> Text:
        from rich.style import Style

        dim = Style(color=palette(dark).dim)
        data = self.pace_data()
        step = self.head_step() if self.replay else self.store.last_step()
        if step is None:
            return Text("Waiting for the run's first steps; alerts appear here as the rules fire.", style=dim)
        ended = self.header_info().state in ("finished",) or (
            self.replay and self._status.loaded and self.store.status() == "finished"
            and (self.head is None or step >= (self._bounds() or (0, 0))[1]))
        checked = ("the loss (NaN, divergence, mismatched loss), gradients (vanishing, exploding), learning rate, "
                   "dead and saturated activations, inputs, labels and class balance, weight updates, accuracy "
                   f"and validation: {len(ALERT_IDS)} checks")
        if self.store.alerts.newest_first(up_to_step=step if self.replay else None):
            return Text("↑/↓ to choose an alert, enter to move the charts to where it began.", style=dim)
        if ended:
            t = Text()
            t.append("✔ Finished clean", style=Style(bold=True, color=palette(dark).series[2]))
            t.append(f": no problem found, steps 0–{fmt.steps(step)}.\n\n")
            facts = []
            for name, label in (("loss", "training loss"), ("val_loss", "validation loss"), ("acc", "accuracy"),
                                ("val_acc", "validation accuracy")):
                v = data.latest(name) if data is not None else None
                if v is not None:
                    facts.append(f"{label} {fmt.num(v)}")
            if facts:
                t.append("It ended with " + ", ".join(facts) + ".\n\n")
            t.append("Checked: " + checked + ".", style=dim)
            return t
        return Text(f"No alerts so far (step {fmt.steps(step)}). Watching " + checked + ".", style=dim)

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
        centre = (v.x0 + v.x1) / 2 if not self.follow else v.x1
        span = (v.x1 - v.x0) * factor
        if span >= self._run_span():
            self.action_zoom_all()
            return
        self.span = max(8.0, span)
        if not self.follow:
            self.x_end = centre + self.span / 2
        self._sync()

    def action_zoom_all(self) -> None:
        self.span, self.follow = None, True
        self._sync()

    def action_pan(self, direction: int) -> None:
        v = self.view()
        if self.span is None:
            self.span = (v.x1 - v.x0) / 2  # panning the whole run: zoom to half first, as pan needs room
            self.x_end = v.x1 if direction > 0 else v.x0 + self.span
        else:
            self.x_end = v.x1 + direction * self.span / 4
        self.follow = False
        b = self._bounds()
        edge = self.head_step() if self.replay else None
        if b is not None and self.x_end >= (edge if edge is not None else b[1]) and direction > 0:
            self.follow = True
        self._sync()

    def action_follow(self) -> None:
        self.follow = True
        self.cursor = None
        self._sync()

    def action_toggle_ema(self) -> None:
        self.ema_on = not self.ema_on
        self._sync()

    def action_ema_strength(self) -> None:
        i = EMA_STRENGTHS.index(self.ema_strength) if self.ema_strength in EMA_STRENGTHS else 0
        self.ema_strength = EMA_STRENGTHS[(i + 1) % len(EMA_STRENGTHS)]
        self.ema_on = True
        self._sync()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._sync()

    def action_next_rank(self) -> None:
        """All ranks → rank 0 → rank 1 → … → all ranks (a run with one rank: nothing to cycle)."""
        ranks = sorted(self.store.ranks)
        if len(ranks) > 1:
            if self.rank is None:
                self.rank = ranks[0]
            elif self.rank in ranks and self.rank != ranks[-1]:
                self.rank = ranks[ranks.index(self.rank) + 1]
            else:
                self.rank = None
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
        return sorted(self.store.alerts.by_key.values(),
                      key=lambda a: (a.get("step", -1), CAUSE_ORDER.get(str(a.get("id")), len(CAUSE_ORDER)),
                                     str(a.get("id")), a.get("rank") or 0))

    def action_alert_jump(self, direction: int) -> None:
        alerts = self.alert_order()
        if not alerts:
            self.say("no alerts")
            return
        ident = [_alert_ident(a) for a in alerts]
        at = self.current_alert
        if at is not None and _alert_ident(at) in ident and self.cursor == at.get("step"):
            # On an alert: the next one in the order, round to the first after the last.
            target = alerts[(ident.index(_alert_ident(at)) + direction) % len(alerts)]
        else:
            here = self.cursor if self.cursor is not None else (self.head_step() if self.replay else None)
            if here is None:
                target = alerts[0] if direction > 0 and self.replay else (alerts[-1] if direction > 0 else alerts[0])
            elif direction > 0:
                target = next((a for a in alerts if a["step"] > here), alerts[0])
            else:
                target = next((a for a in reversed(alerts) if a["step"] < here), alerts[-1])
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
        from .stop_screen import StopScreen

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
        from .stop_screen import reply_words

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
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (self.store.name or "run"))
        step = self.head_step()
        stem = f"accmon-{name}-step{step if step is not None else 0}"
        target = self.export_dir / f"{stem}.{ext}"
        n = 2
        while target.exists():  # a finished run stays at one step: never overwrite the previous export
            target = self.export_dir / f"{stem}-{n}.{ext}"
            n += 1
        return target

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
        from .export import PARQUET_HINT, have_pyarrow

        if not have_pyarrow():
            self.say(f"Parquet export {PARQUET_HINT}", severity="error")
            return
        self._export(self._export_name("parquet"), "parquet")

    @work(thread=True, group="export", exit_on_error=False)
    def _export(self, target: Path, fmt: str) -> None:
        from .export import export_recording, export_store, export_store_parquet

        what = "CSV" if fmt == "csv" else "Parquet"
        try:
            if isinstance(self.source, ReplaySource):
                # The recording holds the exact values (the store keeps older steps to 16 bits).
                rc = (export_recording(self.source.path, quiet=True, csv=str(target)) if fmt == "csv" else
                      export_recording(self.source.path, quiet=True, parquet=str(target)))
                if rc != 0:
                    raise OSError(f"cannot read {self.source.path}")
            elif fmt == "csv":
                export_store(self.store, str(target))
            else:
                export_store_parquet(self.store, str(target))
        except OSError as exc:
            self.call_from_thread(self.say, f"{what} export failed: {exc.strerror or exc}", severity="error")
            return
        self.call_from_thread(self.say, f"series saved: {target}")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # accmon's own actions only: Textual's (its theme picker, its screenshot, its key panel) duplicated
        # `t`, `x` and `?` under other names.
        for key, (tab, what) in enumerate((("overview", "accuracy, loss, gradients, learning rate, alerts"),
                                           ("gradients", "per-layer gradient norms, update ratio"),
                                           ("activations", "dead and saturated fractions per layer"),
                                           ("data", "the model, loss, optimizer, inputs and labels"),
                                           ("alerts", "every alert with its fix and evidence"),
                                           ("system", "step time and data wait, throughput, memory, GPU")), start=1):
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
        import io

        from rich.console import Console

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


def _alert_ident(alert: dict[str, Any]) -> tuple[Any, Any, Any]:
    return alert.get("id"), alert.get("step"), alert.get("rank") or 0


def svg_to_png(svg: str) -> str | None:
    """Convert with the first converter present (rsvg-convert, cairosvg, inkscape); None when there is none."""
    png = str(Path(svg).with_suffix(".png"))
    try:
        if shutil.which("rsvg-convert"):
            subprocess.run(["rsvg-convert", "-o", png, svg], check=True, capture_output=True, timeout=60)
            return png
        try:
            import cairosvg  # type: ignore[import-not-found,unused-ignore]

            cairosvg.svg2png(url=svg, write_to=png)
            return png
        except ImportError:
            pass
        if shutil.which("inkscape"):
            subprocess.run(["inkscape", svg, "--export-type=png", f"--export-filename={png}"], check=True,
                           capture_output=True, timeout=120)
            return png
    except (OSError, subprocess.SubprocessError):
        return None
    return None


# -- entry points for the command line --------------------------------------------------------------------------
def save_crash(exc: BaseException, where: str | None = None) -> str | None:
    """Write `exc`'s traceback to a file of its own (in the per-user runtime directory) and return its path."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        folder = where or registry.runtime_dir()
        path = os.path.join(folder, f"accmon-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path
    except OSError:
        return None


def run_app(app: AccmonApp, **run_kwargs: Any) -> int:
    """Run the app; when it died of an exception, save the traceback, say where, and return 1 (Textual ends an
    app on an unhandled exception with return code 1 and prints the traceback, but `run()` returns None: the
    command exited 0 and the traceback scrolled away). Reads Textual's `_exception`, the error it ended on."""
    result = app.run(**run_kwargs)
    code = app.return_code or 0
    if code:
        import sys

        exc = getattr(app, "_exception", None)
        path = save_crash(exc) if isinstance(exc, BaseException) else None
        saved = f"; the traceback is saved in {path}" if path else ""
        sys.stderr.write(f"accmon: the viewer stopped on an error{saved} — please attach it to a bug report\n")
        return code
    return result or 0


def run_live(entries: list[registry.RunEntry], *, record: str | None = None, on_alert: AlertCommand | None = None,
             baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon` / `accmon attach`: follow one run (all its ranks), history first; re-attach when it restarts."""
    app = AccmonApp(LiveSource(entries, record=record), attach=lambda es: LiveSource(es, record=record),
                    on_alert=on_alert, baseline=baseline, align=align)
    return run_app(app)


def run_live_for_process(run_id: str, proc: subprocess.Popen) -> int:
    """`accmon run -- CMD`: follow the run that `proc` is about to register as `run_id`; stay open after it ends."""

    def find() -> list[registry.RunEntry]:
        return [e for e in registry.list_runs() if e.run_id == run_id]

    source = LiveSource([], find_again=find, process=proc)
    app = AccmonApp(source, pick=False)
    return run_app(app)


def run_replay(path: str, *, baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon replay FILE [--baseline GOOD]`."""
    return run_app(AccmonApp(ReplaySource(path), baseline=baseline, align=align))


def run_picker(*, baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon` with several live runs: choose one first."""
    return run_app(AccmonApp(None, pick=True, baseline=baseline, align=align))


__all__ = ["AccmonApp", "QueueSource", "LiveSource", "ReplaySource", "run_app", "run_live", "run_live_for_process", "run_picker",
           "run_replay", "svg_to_png"]
