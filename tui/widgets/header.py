"""The run header: which run, where, how far, how fast, and in what state — including what went wrong."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from accmon.probe.rules import severity_rank

from ..store import RankData, RunStore, is_missing, stop_words
from ..system_summary import nbytes
from . import fmt
from .palette import OKABE_ITO, palette

# Each state has a glyph as well as a colour, so it reads without colour too.
STATES = {
    "connecting": ("◌", OKABE_ITO["grey"]),
    "live": ("●", OKABE_ITO["green"]),
    "stalled": ("◐", OKABE_ITO["orange"]),
    "finished": ("■", OKABE_ITO["sky"]),
    "crashed": ("✖", OKABE_ITO["vermillion"]),
    "truncated": ("◧", OKABE_ITO["orange"]),  # ended, but steps were lost or the record was cut short
    "disconnected": ("○", OKABE_ITO["orange"]),
    "replay": ("▶", OKABE_ITO["purple"]),
    "waiting": ("◌", OKABE_ITO["grey"]),
}


@dataclass(frozen=True)
class HeaderInfo:
    """What the header shows besides the store: the connection's side of things."""

    state: str = "connecting"
    rank: int | None = None  # the rank shown; None: every rank together (median and spread)
    dropped_live: int = 0
    note: str | None = None  # a line of its own: why stalled, what crashed, replay position, file problems
    head: int | None = None  # replay: the playhead step
    now: float | None = None  # wall clock for elapsed time while live (None: the run's last frame time)
    alerts: tuple[str, ...] | None = None  # severities of the alerts shown (replay: up to the playhead); None: all


def value_at(data: RankData, name: str, step: int) -> float | None:
    """The newest value of `name` logged at or before `step` (replay: the header as of the playhead)."""
    col = data.columns.get(name)
    if col is None:
        return None
    row = int(data.axis.rows(np.array([step], dtype=np.int64), "right")[0])
    vals = col.values(max(0, row - 256), row)
    vals = vals[~is_missing(vals)]
    return float(vals[-1]) if len(vals) else None


def header_text(store: RunStore, info: HeaderInfo, *, dark: bool = True, width: int = 160,
                vs_baseline: str | None = None) -> Text:
    """One line of facts (fewer of them when narrow), a second line when something is wrong, and a last one
    with how the run stands against its baseline (`--baseline`; tui/baseline/standing.py)."""
    pal = palette(dark)
    narrow = width < 110
    dim = Style(color=pal.dim)
    glyph, colour = STATES.get(info.state, ("?", pal.text))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f" {glyph} {info.state} ", style=Style(color="#000000" if dark else "#ffffff", bgcolor=colour, bold=True))
    meta = store.meta.get(0) or next(iter(store.meta.values()), {})
    name = store.name or (store.run_id or "—")
    t.append(f" {name}", style=Style(bold=True))
    host, pid = meta.get("host"), meta.get("pid")
    if (host or pid) and not narrow:
        t.append(f"  {host or '?'}:{pid or '?'}", style=dim)
    ranks = sorted(store.ranks) or [0]
    if len(ranks) > 1:
        if info.rank is None:
            t.append(f"  ranks {ranks[0]}–{ranks[-1]} median", style=Style(bold=True))
            if not narrow:
                t.append(" · band min–max", style=dim)
        else:
            t.append(f"  rank {info.rank}", style=Style(bold=True))
            t.append(f" of {ranks[0]}–{ranks[-1]}", style=dim)
    # Every rank together: speed, epoch and times from the lowest rank (rank 0: the one that paces the run).
    data = store.ranks.get(info.rank if info.rank is not None else ranks[0])
    last = store.last_step() if info.rank is None else (data.axis.last if data is not None else None)
    step = info.head if info.head is not None else last
    t.append("  step ", style=dim)
    t.append(fmt.steps(step))
    epoch = (value_at(data, "epoch", info.head) if info.head is not None else data.latest("epoch")) \
        if data is not None else None
    if epoch is not None and epoch == epoch and not narrow:
        t.append("  epoch ", style=dim)
        # A logged epoch of inf (or 1e300) has no int: say what it is rather than fail (issue 16, item 6).
        t.append(f"{int(epoch)}" if math.isfinite(epoch) and abs(epoch) < 1e15 else fmt.num(epoch))
    sps = data.steps_per_s() if data is not None else None
    if sps is not None and info.state in ("live", "stalled", "connecting"):
        t.append("  ", style=dim)
        t.append(f"{fmt.num(sps)} steps/s")
        samples = data.latest("samples_per_s") if data is not None and not narrow else None
        if samples is not None and math.isfinite(samples):
            t.append(f" · {fmt.num(samples)} samples/s", style=dim)
    if data is not None and not narrow:
        # In replay, as of the cursor (issue 21 item 9: everything on screen describes the run there).
        gpu, rss = ((value_at(data, "cuda_allocated", info.head), value_at(data, "rss", info.head))
                    if info.head is not None else (data.latest("cuda_allocated"), data.latest("rss")))
        if gpu is not None and math.isfinite(gpu):
            t.append("  GPU mem ", style=dim)
            t.append(nbytes(gpu))
        elif rss is not None and math.isfinite(rss):
            t.append("  mem ", style=dim)
            t.append(nbytes(rss))
    started = meta.get("started")
    end_t = data.last_t if data is not None else None
    if info.head is not None and data is not None:
        end_t = data.time_at_step(info.head)
    elif info.now is not None and info.state in ("live", "stalled"):
        end_t = info.now
    if isinstance(started, (int, float)) and end_t is not None:
        t.append("  " if narrow else "  elapsed ", style=dim)
        t.append(fmt.duration(end_t - started))
    sevs = info.alerts if info.alerts is not None else tuple(a["severity"] for a in store.alerts.by_key.values())
    n_alerts = len(sevs)
    if n_alerts:
        worst = max(sevs, key=severity_rank)
        t.append("  ")
        label = "" if narrow else f" alert{'s' if n_alerts > 1 else ''}"
        t.append(f"▲ {n_alerts}{label}", style=Style(color=pal.severity[worst], bold=True))
    note = info.note
    if note is None and info.state == "crashed":
        note = f"crashed: {store.error() or 'no end frame'}"
    if note is None and info.state in ("finished", "truncated"):
        note = stop_words(store.stopped())  # the user's Ctrl-C: said, as a fact, not a crash
    # The second line: what went wrong, then what was lost or ignored on the way.
    troubles = []
    lost = store.loss()
    if lost["lost"]:
        of = f" of {fmt.steps(lost['logged'])}" if lost["logged"] else ""
        why = f" ({fmt.steps(lost['dropped'])} dropped by the probe's queue)" if lost["dropped"] else ""
        troubles.append(f"{fmt.steps(lost['lost'])}{of} steps lost{why}")
    if info.dropped_live:
        troubles.append(f"{info.dropped_live} live frames dropped")
    if store.malformed:
        troubles.append(f"{store.malformed} malformed frames ignored ({store.last_problem})")
    if note or troubles:
        t.append("\n")
        sev = "critical" if info.state == "crashed" else ("warning" if info.state in ("stalled", "disconnected") else None)
        if note:
            t.append(f" {note}", style=Style(color=pal.severity[sev]) if sev else dim)
        if troubles:
            t.append(("  · " if note else " ") + " · ".join(troubles), style=Style(color=pal.severity["warning"]))
    if vs_baseline:
        t.append("\n")
        t.append(f" {vs_baseline}", style=Style(color=pal.text))
    return t


class RunHeader(Static):
    """Run identity and state, one line (two when there is something to say)."""

    DEFAULT_CSS = """
    RunHeader {
        height: auto;
        max-height: 3;
        background: $boost;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """
