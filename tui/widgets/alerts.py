"""Alerts: a table, newest first, severity-coloured, diffed rather than refilled; and the selected alert's story."""

from __future__ import annotations

import math
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

from accmon.probe.rules import severity_rank

from ..store import alert_message
from . import fmt
from .palette import palette

SEVERITY_GLYPH = {"critical": "✖", "warning": "▲", "info": "●"}  # shape as well as colour
_GLYPH_SEVERITY = {g: s for s, g in SEVERITY_GLYPH.items()}


def severity_glyph(alert: dict[str, Any], dark: bool) -> Text:
    sev = alert.get("severity", "info")
    colour = palette(dark).severity.get(sev, palette(dark).text)
    cleared = alert.get("state") == "cleared"
    return Text(SEVERITY_GLYPH.get(sev, "?"), style=Style(color=colour, bold=not cleared, dim=cleared))


def alert_key(key: tuple) -> str:
    return "|".join(str(k) for k in key)


def severity_text(alert: dict[str, Any], dark: bool) -> Text:
    sev = alert.get("severity", "info")
    colour = palette(dark).severity.get(sev, palette(dark).text)
    cleared = alert.get("state") == "cleared"
    return Text(f"{SEVERITY_GLYPH.get(sev, '?')} {sev}", style=Style(color=colour, bold=not cleared, dim=cleared))


class AlertTable(DataTable):
    """The alert list. `sync` adds, updates and removes rows by alert identity; order is newest first."""

    DEFAULT_CSS = """
    AlertTable {
        height: 1fr;
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled, cursor_type="row", zebra_stripes=False)
        self.alerts: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        # The severity as its glyph (its word is in the detail) and a narrow step: the message gets the room
        # (at 160×48 it had 13 columns).
        self.add_column(" ", key="sev", width=1)
        self.add_column("step", key="step", width=6)
        self.add_column("alert", key="id", width=24)
        self.add_column("message", key="msg", width=90)

    def sync(self, items: list[tuple[tuple, dict[str, Any]]], dark: bool = True) -> bool:
        """Make the table show exactly `items` (newest first); return True when anything changed."""
        wanted = {alert_key(k): a for k, a in items}
        changed = False
        for key in [k for k in self.alerts if k not in wanted]:
            self.remove_row(key)
            del self.alerts[key]
            changed = True
        for key, alert in wanted.items():
            old = self.alerts.get(key)
            if old is None:
                self.add_row(*self._cells(alert, dark), key=key)
                changed = True
            elif old != alert:
                for col, cell in zip(("sev", "step", "id", "msg"), self._cells(alert, dark)):
                    self.update_cell(key, col, cell)
                changed = True
            self.alerts[key] = alert
        order = [alert_key(k) for k, _ in items]
        if changed or order != self._order:
            # Newest first, the most severe first within a step (the order AlertBook.newest_first gives).
            self.sort("step", "sev", key=lambda row: (-int(row[0].plain or 0), -_sev_rank(row[1].plain)))
            self._order = order
        return changed

    @staticmethod
    def _cells(alert: dict[str, Any], dark: bool) -> tuple[Text, Text, Text, Text]:
        cleared = alert.get("state") == "cleared"
        style = Style(dim=True) if cleared else Style()
        aid = alert.get("id", "?") + (" (cleared)" if cleared else "")
        rank = alert.get("rank")
        if rank not in (None, 0):
            aid += f" r{rank}"
        step = alert.get("step", -1)
        return (severity_glyph(alert, dark), Text(str(step), style=style), Text(aid, style=style),
                Text(alert_message(alert), style=style))

    def selected_alert(self) -> dict[str, Any] | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None
        return self.alerts.get(key) if key is not None else None


def _sev_rank(plain: str) -> int:
    """A row's severity from its cell's glyph: the one severity order (probe.rules.base), read back."""
    return severity_rank(_GLYPH_SEVERITY.get(plain.strip()))


def _value(v: Any) -> str:
    if isinstance(v, float):
        return fmt.num(v, 8) if math.isfinite(v) else fmt.num(v)
    if isinstance(v, list):
        inner = ", ".join(_value(x) for x in v[:8])
        return f"[{inner}{', …' if len(v) > 8 else ''}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in list(v.items())[:8]) + "}"
    return str(v)


def _layers(v: Any, kinds: dict[str, str]) -> str:
    """Per-layer evidence by module name, with the layer's kind when the model facts know it: `net.1 (ReLU) 1`."""
    parts = []
    for name, x in list(v.items())[:8]:
        kind = kinds.get(str(name))
        parts.append(f"{name}{f' ({kind})' if kind else ''} {_value(x)}")
    return ", ".join(parts) + (", …" if len(v) > 8 else "")


def alert_detail(alert: dict[str, Any] | None, dark: bool = True, *, causes: list[dict[str, Any]] | None = None,
                 layer_kinds: dict[str, str] | None = None, empty: Text | None = None,
                 as_of: tuple[int, int] | None = None) -> Text:
    """One alert, in the order a person acts on it: what is wrong, the fix, the likely cause among the other
    alerts (for a symptom), then why and the evidence. `empty`: what to say when no alert is selected.
    `as_of` (replay): (the step its text and numbers are from, the playhead) when the first is later: the
    alert's first update is from after the playhead."""
    pal = palette(dark)
    dim = Style(color=pal.dim)
    if alert is None:
        return empty if empty is not None else Text(
            "No alert selected. Alerts appear here as the rules fire; ↑/↓ to choose one, "
            "enter to move the charts to where it began.", style=dim)
    t = Text()
    t.append_text(severity_text(alert, dark))
    t.append(f"  {alert.get('id', '?')}", style=Style(bold=True))
    state = alert.get("state", "active")
    t.append(f"  ({state})\n", style=dim)
    t.append(alert_message(alert) + "\n")
    when = f"began at step {alert.get('step')}"
    if alert.get("last_step") not in (None, alert.get("step")):
        when += f", last seen at step {alert.get('last_step')}"
    if alert.get("cleared_step") is not None:
        when += f", cleared at step {alert.get('cleared_step')}"
    if alert.get("rank") not in (None, 0):
        when += f", rank {alert.get('rank')}"
    t.append(when + "\n", style=dim)
    if as_of is not None:
        # The detail shows the alert's update as of the playhead; when even its first is from later, say so.
        t.append(f"text and numbers as of step {as_of[0]}, its first update (the playhead is at step {as_of[1]})\n",
                 style=Style(color=pal.severity["warning"]))
    t.append("\n")
    if alert.get("fix"):
        t.append("Fix  ", style=Style(bold=True, color=pal.series[2]))
        t.append(f"{alert['fix']}\n\n")
    if causes:
        t.append("Likely cause\n", style=Style(bold=True))
        for c in causes:
            t.append_text(severity_text(c, dark))
            t.append(f" {c.get('id')}", style=Style(bold=True))
            t.append(f" (step {c.get('step')}, n/p to go there): ", style=dim)
            t.append(f"{c.get('message', '')}\n")
        t.append("\n")
    if alert.get("explanation"):
        t.append("Why\n", style=Style(bold=True))
        t.append(f"  {alert['explanation']}\n\n")
    evidence = alert.get("evidence")
    if evidence:
        t.append("Evidence\n", style=Style(bold=True))
        if isinstance(evidence, dict):
            for k, v in evidence.items():
                t.append(f"  {k}: ", style=dim)
                t.append((_layers(v, layer_kinds or {}) if k == "layers" and isinstance(v, dict) else _value(v)) + "\n")
        else:
            t.append(f"  {_value(evidence)}\n")
    return t
