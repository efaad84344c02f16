"""The viewer's state and what it derives: which rank's data the panels show, the run's bounds, the playhead's
step, the window every chart shares (a `View`), the alerts shown and the header's words.

`ViewerState` is the base of `AccmonApp` and of its key mixins (alert_panes.py, view_keys.py, run_keys.py): it
declares what they share, so each room reads and types on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import TabbedContent

from accmon.probe import registry

from ..app_sources import Source, SourceStatus
from ..baseline import Aligner
from ..on_alert import AlertCommand
from ..store import Changes, RankData, RankGroup, RunStore, stop_words
from ..widgets import HeaderInfo, View
from . import view as vm


class ViewerState(App[int]):
    """The state of the viewer over one source (set up by `AccmonApp.__init__`) and the reads that derive from it."""

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

    # Set by AccmonApp.__init__ (and on_mount: _main, the screen that holds the panels).
    source: Source | None
    store: RunStore
    aligner: Aligner | None
    on_alert: AlertCommand | None
    attach: Callable[[list[registry.RunEntry]], Source]
    list_runs: Callable[[], list[registry.RunEntry]]
    clock: Callable[[], float]
    export_dir: Path
    current_alert: dict[str, Any] | None  # the alert `n`/`p`/enter last moved to
    notes: list[str]  # what was said in notifications (tests read it)
    _main: Screen
    _status: SourceStatus
    _generation: int
    _restarted: bool
    _drawn: dict[str, Any]
    _last_tick: float

    # -- the redraw, which AccmonApp defines (viewer.py) --------------------------------------------------------
    def _sync(self, changes: Changes | None = None, *, force: bool = False) -> None:
        raise NotImplementedError

    def sync_now(self, budget: float | None = None) -> None:
        raise NotImplementedError

    @property
    def replay(self) -> bool:
        return self.source is not None and self.source.kind == "replay"

    def say(self, message: str, *, severity: str = "information") -> None:
        self.notes.append(message)
        if self.is_running:
            self.notify(message, severity=severity)  # type: ignore[arg-type]

    # -- what the view shows ------------------------------------------------------------------------------------
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

    def _bounds(self) -> tuple[int, int] | None:
        data = self.view_data()
        if data is None or data.axis.first is None or data.axis.last is None:
            return None
        return data.axis.first, data.axis.last

    def head_step(self) -> int | None:
        b = self._bounds()
        return None if b is None else vm.head_at(self.head, *b)

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

    def visible_alerts(self) -> list[tuple[tuple, dict[str, Any]]]:
        up_to = self.head_step() if self.replay and self.head is not None else None
        return self.store.alerts.newest_first(up_to_step=up_to)

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
