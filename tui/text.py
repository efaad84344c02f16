"""What accmon prints about alerts and runs, for any command: one line per alert, peer text with its control
characters escaped, values JSON can carry. No textual: `check`, `attach --headless`, `ls` and the app share it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .store import alert_message

RULE_ERROR_ID = "rule_error"  # accmon.probe.rules.diagnoser.RULE_ERROR_ID (check runs without the rules too)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as strings that say what they were, never as `null`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    """`text` as one line safe to print: control characters shown as \\xNN escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def format_alert(a: Mapping[str, Any]) -> str:
    """One line per alert, as `attach --headless` and `check` print them."""
    sev = str(a.get("severity", "info")).upper()
    state = " (cleared)" if a.get("state") == "cleared" else ""
    rank = f" rank {a['rank']}" if a.get("rank") not in (None, 0) else ""
    return printable(f"[step {a.get('step')}{rank}] {sev} {a.get('id')}{state}: {alert_message(a)} — fix: {a.get('fix')}")
