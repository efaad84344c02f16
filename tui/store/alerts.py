"""A run's alerts as the viewer keeps them: each alert's newest update and a bounded history of its updates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from accmon.probe.rules import SEVERITY_RANK
from accmon.probe.rules.base import clean_alert


@dataclass
class AlertBook:
    """Alerts by identity (id, rank, cause), in the order first seen. `by_key` holds each alert's newest update;
    `history` a bounded list of its updates in the order of the step each is as of, so that a replay describes an
    alert as it stood at the playhead (`at`), not as it ended."""

    # Each held as the plain dict clean_alert made (an `Alert`): the app and the widgets read them as dicts.
    by_key: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)
    version: int = 0

    def update(self, raw: Any, rank: int = 0) -> bool:
        """Take one update of an alert (a frame's, from `rank`); False for what is no alert (clean_alert)."""
        clean = clean_alert(raw, rank)
        if clean is None:
            return False
        alert = cast("dict[str, Any]", clean)
        key = alert_key(alert)
        hist = self.history.setdefault(key, [])
        at = as_of_step(alert)
        # In step order; an update as of the same step as the last one replaces it (the same evidence, or its
        # clearing). An update that arrives late (a replay's streamed alerts after today's final diagnosis) takes its
        # place in the order and never hides a newer one.
        i = len(hist)
        while i and as_of_step(hist[i - 1]) > at:
            i -= 1
        if i and as_of_step(hist[i - 1]) == at:
            hist[i - 1] = alert
        else:
            hist.insert(i, alert)
        if len(hist) > ALERT_HISTORY:
            # Alerts update rarely; one that updates often keeps its first update, every other one of the older
            # half and all of the newer half: the playhead finds an update near it wherever it is.
            half = ALERT_HISTORY // 2
            hist[:] = [hist[0], *hist[1:-half:2], *hist[-half:]]
        self.by_key[key] = hist[-1]
        self.version += 1
        return True

    def replaced_by(self, alerts: Iterable[Any]) -> AlertBook:
        """A book of `alerts` (a replay's final diagnosis: each alert's newest update), each with the updates this
        book saw of it before: the rules child streamed them as they fired."""
        book = AlertBook()
        final = [c for c in (clean_alert(a) for a in alerts) if c is not None]
        keys = {alert_key(a) for a in final}
        for key in keys:
            for a in self.history.get(key, ()):
                book.update(a)
        for alert in final:
            book.update(alert)
        book.version = self.version + 1
        return book

    def at(self, key: tuple, step: int | None) -> dict[str, Any] | None:
        """The alert `key` as it stood at `step`: its last update as of `step` or before; its first when even that
        one is from after `step` (the detail then says its numbers are from later). None: no such alert."""
        hist = self.history.get(key)
        if not hist:
            return self.by_key.get(key)
        if step is None:
            return hist[-1]
        chosen = hist[0]
        for a in hist:
            if as_of_step(a) > step:
                break
            chosen = a
        return chosen

    def newest_first(self, up_to_step: int | None = None) -> list[tuple[tuple, dict[str, Any]]]:
        """The alerts raised at `up_to_step` or before, each as it stood then (all of them, as they are now, for
        None), newest first, the most severe first within a step."""
        items = list(self.by_key.items()) if up_to_step is None else [
            (k, a) for k, a in ((k, self.at(k, up_to_step) or a) for k, a in self.by_key.items()) if a["step"] <= up_to_step]
        return sorted(items, key=lambda ka: (-ka[1]["step"], -SEVERITY_RANK[ka[1]["severity"]], ka[1]["id"]))

    def steps(self) -> list[tuple[int, str]]:
        """(step, severity) of every alert, for markers on time axes."""
        return [(a["step"], a["severity"]) for a in self.by_key.values()]

    def __len__(self) -> int:
        return len(self.by_key)


ALERT_HISTORY = 64  # updates kept per alert (see AlertBook.update)


def alert_key(alert: Mapping[str, Any]) -> tuple[str, int, str]:
    """A clean alert's identity in the book (id, rank, cause): updates of one key replace each other."""
    return alert["id"], alert["rank"] or 0, str(alert.get("cause", ""))


def as_of_step(alert: Mapping[str, Any]) -> int:
    """The step an alert update describes the run at: when it was cleared, else the last step its evidence was
    taken at, else when it was raised."""
    for k in ("cleared_step", "last_step", "step"):
        v = alert.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return -1


def alert_message(alert: Mapping[str, Any]) -> str:
    """An alert's message as every view shows it. A cleared alert keeps the message of its last active update,
    which reads as if it still held ("accuracy is stuck at chance"): it is bounded in time instead, "until step
    207: accuracy is stuck at chance …", beside its "(cleared)" label."""
    message = str(alert.get("message", ""))
    if alert.get("state") != "cleared":
        return message
    at = alert.get("cleared_step")
    return f"until step {at}: {message}" if isinstance(at, int) and not isinstance(at, bool) else f"earlier: {message}"
