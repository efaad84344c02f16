"""What the charts show, as pure functions of the app's view state (span, follow, right edge, playhead).

The app holds the state (Textual reactives, tui/app/viewer.py); every time chart shares one window, so zoom
and pan move all charts together. Replay's playhead moves at the run's own pace, read from its frame times.
"""

from __future__ import annotations

from typing import Any

SPEEDS: tuple[int | None, ...] = (1, 10, 100, 1000, None)  # replay ×1 … ×1000 and max (None)
# max: at least ×1000, and at least 1/150 of the run per tick — the whole run in 30 s at 5 ticks a second.
MAX_SPEED_FRACTION = 1 / 150
EMA_STRENGTHS = (0.6, 0.9, 0.99, 0.999)
SEEK_FRACTION = 0.01  # ←/→ in replay: 1 % of the run; shift: 10 %


def window(first: int, last: int, head: int | None, *, span: float | None, follow: bool,
           x_end: float) -> tuple[float, float]:
    """The steps every time chart shows, [x0, x1]: the whole run (span None), or `span` steps ending at the
    newest step shown (following: the playhead in replay, else the last step) or at `x_end`."""
    right = head if head is not None else last
    x0: float
    x1: float
    if span is None:
        x0, x1 = first, max(last, first + 1)
    else:
        x1 = right if follow else x_end
        x0 = x1 - span
    return float(x0), float(max(x1, x0 + 1))


def zoomed(x0: float, x1: float, factor: float, *, follow: bool, x_end: float,
           run_span: float) -> tuple[float | None, float]:
    """(span, right edge) after zooming the window [x0, x1] by `factor` (0.5: in); span None: the whole run,
    as a zoom out past the run's length asks. A followed window keeps its right edge, another its centre."""
    centre = (x0 + x1) / 2 if not follow else x1
    span = (x1 - x0) * factor
    if span >= run_span:
        return None, x_end
    span = max(8.0, span)
    return span, (centre + span / 2 if not follow else x_end)


def panned(x0: float, x1: float, direction: int, *, span: float | None,
           right_edge: float | None) -> tuple[float, float, bool]:
    """(span, right edge, follow) after panning [x0, x1] a quarter span in `direction`; panning the whole run
    zooms to half first, as pan needs room. Reaching `right_edge` (the newest step shown) follows it again."""
    if span is None:
        span = (x1 - x0) / 2
        x_end = x1 if direction > 0 else x0 + span
    else:
        x_end = x1 + direction * span / 4
    follow = right_edge is not None and x_end >= right_edge and direction > 0
    return span, x_end, follow


def head_at(head: float | None, first: int, last: int) -> int:
    """The playhead's step, within what has been read; None (at the newest step read) is the last."""
    if head is None:
        return last
    return int(round(min(max(head, first), last)))


def advance(head: float, first: int, last: int, speed: int | None, data: Any, dt: float) -> float:
    """The playhead `dt` seconds of playing later at `speed` (None: max), never past `last`."""
    if speed is None:
        step = max((last - first) * MAX_SPEED_FRACTION, paced(data, head, dt * 1000) - head, 1.0)
        head += step
    else:
        head = paced(data, head, dt * speed)
    return min(head, last)


def paced(data: Any, head: float, run_seconds: float) -> float:
    """The step the run reached `run_seconds` of its own time after `head` (its own pace, from frame times)."""
    t = data.time_at_step(head)
    if t is None:
        return head + run_seconds * 100  # no times recorded: 100 steps a second at ×1
    nxt = data.step_at_time(t + run_seconds)
    if nxt is None or nxt <= head:
        return head + max(run_seconds * 1e-3, 1e-3)  # a pause in the run: creep on, never stand still
    return float(nxt)


def next_strength(strength: float) -> float:
    """`E`: the next smoothing strength, round to the first."""
    i = EMA_STRENGTHS.index(strength) if strength in EMA_STRENGTHS else 0
    return EMA_STRENGTHS[(i + 1) % len(EMA_STRENGTHS)]


def next_rank(ranks: list[int], rank: int | None) -> int | None:
    """`r`: all ranks (None) → the first → the next → … → all ranks."""
    if rank is None:
        return ranks[0]
    if rank in ranks and rank != ranks[-1]:
        return ranks[ranks.index(rank) + 1]
    return None
