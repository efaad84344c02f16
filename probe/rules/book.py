"""The alerts of one run: one per (id, cause), updated as evidence grows, cleared when the condition ends."""

from __future__ import annotations

import copy
from typing import Any

from .base import SEVERITIES, Finding, num
from .thresholds import UPDATE_FACTOR


class AlertBook:
    """Applies findings to alerts and says which changed enough to be sent."""

    def __init__(self) -> None:
        self._alerts: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._sent_score: dict[tuple[str, str | None], float] = {}
        self.active_map: dict[str, set[str | None]] = {}  # id → causes now active; kept current by apply()

    def apply(self, f: Finding, now: int, rank: int) -> dict[str, Any] | None:
        """Record a finding at step `now`; return a copy of the alert when it is new, materially updated or cleared."""
        key = (f.id, f.cause)
        alert = self._alerts.get(key)
        if not f.active:
            if alert is None or alert["state"] != "active":
                return None
            alert.update(state="cleared", cleared_step=now, last_step=now)
            causes = self.active_map.get(f.id)
            if causes is not None:
                causes.discard(f.cause)
                if not causes:
                    del self.active_map[f.id]
            return copy.deepcopy(alert)
        severity = f.severity if f.severity in SEVERITIES else "warning"
        evidence = {k: _clean(v) for k, v in f.evidence.items()}
        if alert is None or alert["state"] == "cleared":
            began = f.since if f.since is not None and f.since <= now else now
            alert = {"id": f.id, "severity": severity, "step": began, "message": f.message, "evidence": evidence,
                     "fix": f.fix, "state": "active", "last_step": now, "cleared_step": None, "rank": rank}
            if f.cause is not None:
                alert["cause"] = f.cause
            self._alerts[key] = alert
            self._sent_score[key] = f.score
            self.active_map.setdefault(f.id, set()).add(f.cause)
            return copy.deepcopy(alert)
        material = severity != alert["severity"] or _moved(self._sent_score.get(key, f.score), f.score)
        alert.update(severity=severity, message=f.message, evidence=evidence, fix=f.fix, last_step=now)
        if material:
            self._sent_score[key] = f.score
            return copy.deepcopy(alert)
        return None

    def alerts(self) -> list[dict[str, Any]]:
        """Copies of every alert, in the order they first fired."""
        return [copy.deepcopy(a) for a in self._alerts.values()]


def _moved(old: float, new: float) -> bool:
    if old == new:
        return False
    if old <= 0 or new <= 0:
        return (old <= 0) != (new <= 0)
    return max(old, new) / min(old, new) >= UPDATE_FACTOR


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, str) or v is None or isinstance(v, bool):
        return v
    return num(v)
