"""What a rule is and what it returns; what an alert is (`Severity`, `Alert`) and the one way to read one (`clean_alert`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from .health import Health
from .state import RunState

Severity = Literal["info", "warning", "critical"]
# The one severity order (least to most severe) every part reads: the rules, check's exit code, the viewer's
# markers, table and header, --on-alert's threshold.
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
ALERT_STATES = ("active", "cleared")


def severity_rank(severity: Any) -> int:
    """0 info, 1 warning, 2 critical; anything else (an old or hostile frame's) reads as info."""
    return SEVERITY_RANK.get(severity, 0) if isinstance(severity, str) else 0


class _AlertFields(TypedDict):
    id: str
    severity: Severity
    step: int  # the step the condition began (-1: unknown)
    message: str
    fix: str
    evidence: Any  # the rules' numbers (a map); whatever a recording holds otherwise: JSON-safe only when written
    state: Literal["active", "cleared"]
    rank: int


class Alert(_AlertFields, total=False):
    """An alert as every reader holds it (docs/frames.md, `alert`): the map the rules emit and the wire carries,
    after `clean_alert`. A TypedDict, not a class: alerts arrive as msgpack maps and stay plain dicts, with no
    conversion on the way in or out (`check --json` writes them as they are). The fields above always; these when
    the rules set them (and any other key a recording holds, kept as it is):"""

    cause: str | None  # which of an id's conditions (one alert per (id, cause))
    last_step: int  # the step its evidence is as of
    cleared_step: int | None


def _step(step: Any) -> int:
    """A step number: an int, or a float that is one (a script's global_step as 5.0); anything else is -1."""
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    if isinstance(step, float) and math.isfinite(step) and step.is_integer():
        return int(step)
    return -1


def clean_alert(alert: Any, rank: int = 0) -> Alert | None:
    """An alert whatever a frame, a recording or a peer holds: the known fields with their types (a severity
    outside SEVERITIES reads as info, an unknown state as active, a rank that is no int as the frame's `rank`),
    the other keys kept as they are; None for what is no alert (not a map, no string id). The one normaliser:
    `check`, the viewer's store and its alert book read alerts through it."""
    if not isinstance(alert, dict) or not isinstance(alert.get("id"), str):
        return None
    out = dict(alert)
    severity, state, own_rank = alert.get("severity"), alert.get("state"), alert.get("rank")
    out.update(
        severity=severity if isinstance(severity, str) and severity in SEVERITY_RANK else "info",
        step=_step(alert.get("step")),
        message=str(alert.get("message", "")),
        fix=str(alert.get("fix", "")),
        evidence=alert.get("evidence", {}),
        state=state if isinstance(state, str) and state in ALERT_STATES else "active",
        rank=own_rank if isinstance(own_rank, int) else rank,
    )
    if "cause" in out and not isinstance(out["cause"], (str, type(None))):
        out["cause"] = str(out["cause"])
    return cast(Alert, out)


@dataclass
class Finding:
    """A rule's verdict on one alert key (id, cause): active with its evidence, or ended."""

    id: str
    active: bool
    cause: str | None = None
    severity: str = "warning"
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""
    since: int | None = None  # the step the condition began, when the rule knows it (else: now)
    score: float = 1.0  # the strength of the evidence; an update goes out when it moves by a factor of two


@functools.cache
def ended(alert_id: str, cause: str | None = None) -> Finding:
    """The verdict that a condition is over (shared instances: findings are read, never changed)."""
    return Finding(alert_id, False, cause)


class Rule:
    """One diagnosis (or a few that share their evidence). Stateless: everything lives in RunState."""

    ids: tuple[str, ...] = ()
    # True for rules that read only facts (and other alerts): run again only when the facts change.
    static = False

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        """Verdicts for the keys this rule can decide now. Keys it leaves out keep their state: a rule that
        lacks the data to decide must not clear an alert."""
        raise NotImplementedError


def num(x: Any, digits: int = 4) -> Any:
    """A number for evidence: rounded to `digits` significant digits; NaN and Inf as strings (JSON has neither)."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    if not math.isfinite(f):
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if f == 0:
        return 0.0
    r = float(f"{f:.{digits}g}")
    return r if math.isfinite(r) else f  # rounding next to the largest double can overflow


def layer_list(values: dict[str, float], limit: int = 4) -> str:
    """'fc1 (1e-09), fc2 (3e-08) and 3 more' for a message."""
    items = [f"{name} ({num(v, 2)})" for name, v in values.items()]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    return ", ".join(items)
