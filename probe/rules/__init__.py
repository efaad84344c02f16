"""Diagnostic rules: frames in, alerts out (docs/rules.md). Pure Python and numpy: no torch, no textual.

    from accmon.probe.rules import Diagnoser
    d = Diagnoser()                 # every rule; Diagnoser(rules=[...]) for a subset
    changed = d.observe(frame)      # alerts new, materially updated or cleared by this frame
    d.alerts()                      # every alert so far, active and cleared
"""

from __future__ import annotations

from .base import SEVERITIES, SEVERITY_RANK, Finding, Rule, severity_rank
from .catalogue import ALERT_IDS, RULES, all_rules
from .diagnoser import Diagnoser

__all__ = ["ALERT_IDS", "RULES", "SEVERITIES", "SEVERITY_RANK", "Diagnoser", "Finding", "Rule", "all_rules",
           "severity_rank"]
