"""Diagnostic rules: frames in, alerts out (docs/rules.md). Pure Python and numpy: no torch, no textual.

    from accmon.probe.rules import Diagnoser
    d = Diagnoser()                 # every rule; Diagnoser(rules=[...]) for a subset
    changed = d.observe(frame)      # alerts new, materially updated or cleared by this frame
    d.alerts()                      # every alert so far, active and cleared

A whole run, every rank (`accmon check`, replay, the live viewers' cross-rank rules): `StreamDiagnosis`.
"""

from __future__ import annotations

from .base import SEVERITIES, SEVERITY_RANK, Finding, Rule, severity_rank
from .catalogue import ALERT_IDS, RULES, all_rules
from .diagnoser import Diagnoser
from .ranks import RankDiagnoser
from .stream import MAX_RANKS, StreamDiagnosis

__all__ = ["ALERT_IDS", "MAX_RANKS", "RULES", "SEVERITIES", "SEVERITY_RANK", "Diagnoser", "Finding", "RankDiagnoser",
           "Rule", "StreamDiagnosis", "all_rules", "severity_rank"]
