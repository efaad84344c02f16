"""What a rule is and what it returns."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .health import Health
from .state import RunState

# The one severity order (least to most severe) every part reads: the rules, check's exit code, the viewer's
# markers, table and header, --on-alert's threshold.
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


def severity_rank(severity: Any) -> int:
    """0 info, 1 warning, 2 critical; anything else (an old or hostile frame's) reads as info."""
    return SEVERITY_RANK.get(severity, 0) if isinstance(severity, str) else 0


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
