"""The header's line: how this run stands against the baseline, "vs baseline: val_acc 0.91 vs 0.93 at step
400 (−0.02) · …"."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..store import RankData, is_missing
from .align import Aligner
from .outcome import num3
from .series import SMOOTH_MAX, SMOOTH_SHARE, is_validation, metrics, smoothed


def level_at(data: RankData, name: str, step: float) -> float | None:
    """The value of `name` at `step`: the newest validation value at or before it; for a training metric the
    mean of the last measured values up to it (a batch's accuracy is noise)."""
    col = data.columns.get(name)
    if col is None or not data.axis.n:
        return None
    row = int(data.axis.rows(np.array([int(min(max(step, -2**62), 2**62))], dtype=np.int64), "right")[0])
    vals = col.values(max(0, row - 512), row)
    vals = vals[~is_missing(vals)].astype(np.float64)
    if not len(vals):
        return None
    if is_validation(name):
        return float(vals[-1])
    w = int(max(1, min(SMOOTH_MAX, round(col.measured * SMOOTH_SHARE))))
    tail = vals[-w:]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if len(tail) else float(vals[-1])


def standing(live: RankData | None, facts: dict[str, Any], aligner: Aligner, step: int | None) -> str:
    """One line for the header: how this run stands against the baseline at `step` (its newest, or the
    replay's playhead)."""
    base = aligner.baseline
    note = f" · baseline {base.truncated}" if base.truncated else ""
    # A baseline cut short is said first (the line is cut at the terminal's width), its details last.
    vs = "vs truncated baseline" if base.truncated else "vs baseline"
    align = aligner.fallback(live, facts) or (f"aligned by {aligner.align}" if aligner.align != "step" else "")
    align = f" · {align}" if align else ""
    if live is None or step is None or not live.axis.n:
        return f"{vs} {_short(base.path)}: waiting for steps{align}{note}"
    loss, acc = metrics(live, base.data)
    name = acc or loss
    if name is None:
        return f"{vs} {_short(base.path)}: no loss or accuracy in common{align}{note}"
    b_step = float(aligner.to_baseline(live, facts, np.array([step]))[0])
    mine = level_at(live, name, step)
    theirs = level_at(base.data, name, b_step) if b_step >= (base.data.axis.first or 0) else None
    words = f"{vs}: {name} {num3(mine)} vs {num3(theirs)} at step {step}"
    if aligner.align != "step" and aligner.fallback(live, facts) is None:
        words += f" (baseline step {int(round(b_step))})"
    if mine is not None and theirs is not None and math.isfinite(mine) and math.isfinite(theirs):
        better = (mine - theirs) if name == acc else (theirs - mine)
        words += f" ({_signed(mine - theirs)}, {'ahead' if better > 0 else 'behind' if better < 0 else 'level'})"
    if acc is not None:
        target = base.outcome(loss or "", acc).final_acc
        if target is not None:
            reached = _first_reach(live, acc, target, step, aligner.memo)
            base_at = base.outcome(loss or "", acc).steps_to(target)
            took = f" (the baseline took {base_at} steps)" if base_at is not None else ""
            words += f" · reached baseline's final {acc} {target:.3g}: " + (
                "not yet" if reached is None else f"at step {reached}") + took
    return words + align + note


def _first_reach(data: RankData, name: str, target: float, up_to: int, memo: dict[tuple, Any]) -> int | None:
    """The first step at or before `up_to` where `name` (smoothed) reached `target`. Scans only the rows not
    scanned yet (memo): the header asks on every redraw of a run that grows."""
    key = (id(data), name, target)
    found, scanned = memo.get(key, (None, 0))
    if found is not None:
        return found if found <= up_to else None
    n = int(data.axis.rows(np.array([up_to], dtype=np.int64), "right")[0])
    col = data.columns.get(name)
    if col is None or n <= scanned:
        return None
    w = 0 if is_validation(name) else int(max(1, min(SMOOTH_MAX, round(col.measured * SMOOTH_SHARE))))
    r0 = max(0, scanned - 4 * w)
    vals = col.values(r0, n)
    ok = np.flatnonzero(~is_missing(vals))
    sm = smoothed(vals[ok].astype(np.float64), name)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(sm >= target)
    if len(hit):
        found = int(data.axis.steps_at(np.array([r0 + ok[hit[0]]]))[0])
    memo[key] = (found, n)
    return found


def _signed(v: float) -> str:
    return f"{'+' if v >= 0 else '−'}{abs(v):.2g}" if abs(v) >= 0.005 or v == 0 else f"{'+' if v > 0 else '−'}{abs(v):.1e}"


def _short(path: str) -> str:
    return os.path.basename(path) or path
