"""The alerts as the app walks and tells them: the order `n` walks, the banner's alert and line, the causes
beside a symptom, and what the detail pane says when no alert is chosen. Pure functions of the store's alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.style import Style
from rich.text import Text

from accmon.probe.rules import SEVERITY_RANK
from accmon.probe.rules.catalogue import ALERT_IDS

from ..store import alert_message
from ..widgets import fmt, severity_text
from ..widgets.palette import palette

# Alerts that report what a person sees rather than why: their detail names the cause alerts beside them.
SYMPTOMS = frozenset({"accuracy_stuck", "single_class_prediction", "val_loss_stagnating", "lr_too_low"})
# The rules' evaluation order puts causes before the symptoms that consult them (probe/rules/catalogue.py):
# `n` walks alerts of one step in that order, so the root cause comes first.
CAUSE_ORDER = {aid: i for i, aid in enumerate(ALERT_IDS)}
CHECKED = ("the loss (NaN, divergence, mismatched loss), gradients (vanishing, exploding), learning rate, "
           "dead and saturated activations, inputs, labels and class balance, weight updates, accuracy "
           f"and validation: {len(ALERT_IDS)} checks")

AlertAt = Callable[[tuple, int], "dict[str, Any] | None"]  # AlertBook.at: an alert as it stood at a step


def alert_ident(alert: dict[str, Any]) -> tuple[Any, Any, Any]:
    return alert.get("id"), alert.get("step"), alert.get("rank") or 0


def book_key(alert: dict[str, Any]) -> tuple[Any, int, str]:
    """The alert's key in the store's AlertBook: (id, rank, cause)."""
    return alert.get("id"), alert.get("rank") or 0, str(alert.get("cause", ""))


def alert_order(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts in the order `n` walks them: by step; within a step the causes before the symptoms they
    explain (dead_relu before accuracy_stuck, the rules' own order); then id and rank, so that no two alerts
    tie (a sort by (step, id) compared by step alone never reached some of them: issue 21 item 3)."""
    return sorted(alerts, key=lambda a: (a.get("step", -1), CAUSE_ORDER.get(str(a.get("id")), len(CAUSE_ORDER)),
                                         str(a.get("id")), a.get("rank") or 0))


def jump_target(alerts: list[dict[str, Any]], direction: int, *, current: dict[str, Any] | None,
                cursor: int | None, here: int | None, replay: bool) -> dict[str, Any]:
    """The alert `n` (direction 1) or `p` (-1) moves to from `current` (the alert last moved to, when the
    cursor is still on it) or from the step `here` (the cursor, else replay's playhead). `alerts`: in order."""
    ident = [alert_ident(a) for a in alerts]
    if current is not None and alert_ident(current) in ident and cursor == current.get("step"):
        # On an alert: the next one in the order, round to the first after the last.
        return alerts[(ident.index(alert_ident(current)) + direction) % len(alerts)]
    if here is None:
        return alerts[0] if direction > 0 and replay else (alerts[-1] if direction > 0 else alerts[0])
    if direction > 0:
        return next((a for a in alerts if a["step"] > here), alerts[0])
    return next((a for a in reversed(alerts) if a["step"] < here), alerts[-1])


def banner_alert(items: list[dict[str, Any]], current: dict[str, Any] | None) -> dict[str, Any]:
    """The alert in question: the one `n` moved to while it is shown, else the most severe (the root cause
    first, the newest first)."""
    if current is None or alert_ident(current) not in {alert_ident(a) for a in items}:
        current = max(items, key=lambda a: (SEVERITY_RANK.get(str(a.get("severity", "info")), 0),
                                            -CAUSE_ORDER.get(str(a.get("id")), 99), -a.get("step", 0)))
    return current


def banner_text(alert: dict[str, Any], shown: int, dark: bool) -> Text:
    """The banner's one line: the alert, its step and message, how many more and where the details are."""
    pal = palette(dark)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append_text(severity_text(alert, dark))
    t.append(f" {alert.get('id')}", style=Style(bold=True))
    t.append(f" @{alert.get('step')}: ", style=Style(color=pal.dim))
    t.append(alert_message(alert))
    more = shown - 1
    t.append(f"  · {more} more: n/p" if more else "  ", style=Style(color=pal.dim))
    t.append(" · 5: details", style=Style(color=pal.dim))
    return t


def causes_of(alert: dict[str, Any], order: list[dict[str, Any]], up_to: int | None,
              at: AlertAt) -> list[dict[str, Any]]:
    """The cause alerts beside a symptom: the other non-symptoms begun by its last step (and by the playhead
    `up_to` in replay, each as it stood then). None beside an alert that is not a symptom."""
    if alert.get("id") not in SYMPTOMS:
        return []
    causes = [a for a in order if a.get("id") not in SYMPTOMS and a.get("id") != alert.get("id")
              and (up_to is None or a.get("step", 0) <= up_to)
              and a.get("step", 0) <= max(alert.get("step", 0), alert.get("last_step") or 0)]
    if up_to is not None:  # each cause as it stood at the playhead too
        causes = [at(book_key(c), up_to) or c for c in causes]
    return causes


def layer_kinds(facts: dict[str, Any]) -> dict[str, str]:
    """Each layer's kind (Linear, Conv2d, …) from the model's facts, for the detail's layer names."""
    model = facts.get("model")
    if isinstance(model, dict) and isinstance(model.get("layers"), list):
        return {str(layer.get("name")): str(layer.get("kind")) for layer in model["layers"]
                if isinstance(layer, dict) and layer.get("kind")}
    return {}


def no_alert_text(step: int | None, *, data: Any, any_shown: bool, ended: bool, dark: bool) -> Text:
    """The detail pane with no alert chosen: waiting, how to choose one, a clean finish, or what is watched."""
    dim = Style(color=palette(dark).dim)
    if step is None:
        return Text("Waiting for the run's first steps; alerts appear here as the rules fire.", style=dim)
    if any_shown:
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
        t.append("Checked: " + CHECKED + ".", style=dim)
        return t
    return Text(f"No alerts so far (step {fmt.steps(step)}). Watching " + CHECKED + ".", style=dim)
