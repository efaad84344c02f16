"""The keys that move the view every chart shares — tabs, zoom, pan, follow, smoothing, log scale, rank, theme —
and replay's playhead: play, speed, seek, the timeline. The maths is view.py's.
"""

from __future__ import annotations

import time

from textual.widgets import TabbedContent

from ..widgets import LayerHeatMap, Timeline, TimelineState, View
from . import view as vm
from .state import ViewerState
from .view import SEEK_FRACTION, SPEEDS


class ViewKeys(ViewerState):
    """The view's keys and the replay playhead (a part of AccmonApp)."""

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

    # -- replay: play, speed, seek ----------------------------------------------------------------------
    def _advance(self, dt: float) -> None:
        b = self._bounds()
        if b is None:
            return
        first, last = b
        head = vm.advance(float(self.head_step() or first), first, last, SPEEDS[self.speed_i], self.pace_data(), dt)
        if head >= last and self._status.loaded:
            self.playing = False  # at the end of a recording read whole
        self.head = head

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
