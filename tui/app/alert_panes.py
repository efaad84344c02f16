"""The alerts on screen: the banner, the two alert tables and their detail panes; `n`/`p`, enter and the palette
move every chart to where an alert began. The words and the order are alerts.py's.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static, TabbedContent

from ..store import alert_message, as_of_step
from ..widgets import AlertTable, alert_detail
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
from .state import ViewerState


class AlertPanes(ViewerState):
    """The alert panes and the keys that walk the alerts (a part of AccmonApp)."""

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
