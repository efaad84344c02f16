"""The rules engine: frames in, alerts out. Pure Python and numpy, so it runs inside training processes."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

from .base import Rule
from .book import AlertBook
from .health import HealthTracker
from .state import RunState
from .thresholds import EVAL_EVERY, EVAL_EVERY_LATE

# A frame spanning more evaluation points than this is evaluated at this many of them, evenly spread: the cost of
# a frame stays bounded. A probe's frame holds at most 2,048 steps, 256 points at the densest interval (every 8
# steps), so only a hostile or hand-made frame is thinned: below the cap, which points are evaluated does not
# depend on where frames were cut (a fast run's half-second frame holds hundreds of steps, a slow one's a few).
MAX_EVALS_PER_FRAME = 256


class Diagnoser:
    """Diagnoses one rank's stream of frames (docs/frames.md).

    `observe(frame)` returns the alerts that are new, materially updated or cleared by that frame;
    `alerts()` every alert so far, active and cleared, in the order they first fired.
    """

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        if rules is None:
            from .catalogue import all_rules

            rules = all_rules()
        self.rules: list[Rule] = list(rules)
        self.state = RunState()
        self.health = HealthTracker()
        self.book = AlertBook()
        self.rank = 0
        self.errors: dict[str, str] = {}  # rule class → the error that disabled it
        self.error_steps: dict[str, int] = {}  # rule class → the step whose evaluation raised it
        self._static_seen: dict[int, int] = {}  # static rule → facts version it last saw
        self._last_eval = -1
        # Steps taken in since the last evaluation point: the next point has something new to look at, whichever
        # frame brought it.
        self._unseen = False

    def observe(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Take in one decoded frame; return copies of the alerts it raised, materially updated or cleared.
        Frames of other kinds (meta, alert, exit, hb) and malformed frames change nothing."""
        kind = frame.get("kind")
        rank = frame.get("rank")
        if isinstance(rank, int) and not isinstance(rank, bool):
            self.rank = rank
        st = self.state
        if kind == "facts":
            facts = frame.get("facts")
            if not isinstance(facts, dict):
                return []
            st.merge_facts(facts)
            if self._unseen:
                # Steps came since the last evaluation point: the next point sees these facts with them. A look
                # where a facts frame happens to arrive (after whatever step the last frame ended at, a matter of
                # wall time) would make verdicts depend on the machine.
                return []
            # Nothing new since the last look (or no step yet: the set-up's static faults speak at once; or a run
            # that stopped stepping, whose facts say why): looked at again, at the same step, with these facts.
            return list(self._evaluate([max(self._last_eval, 0)]).values())
        if kind == "steps":
            steps = frame.get("steps")
            if not isinstance(steps, list) or not steps or not set(map(type, steps)) <= {int}:
                return []
            cols = frame.get("cols")
            cols = cols if isinstance(cols, dict) else {}
            hists = frame.get("hists")
            hists = hists if isinstance(hists, dict) else None
            last = steps[-1]
            # Rules run at fixed steps only, never where a frame happens to end: frames are cut by wall time,
            # and a verdict must not depend on how fast the machine was (issue 15). The end frame adds a last look.
            points = evaluation_points(st.last_step, last)
            # Steps go in up to each evaluation point, then the rules run: every verdict sees the run as it
            # was at that step, however many steps the frame holds (a recording's frame can hold thousands).
            # A point with no step since the last look (of this frame or of the one before) sees what that look
            # saw: passed over, so a frame that jumps a trillion steps costs one look, not one per point. Which
            # points are looked at is then a property of the run's steps, not of where its frames were cut.
            intake = st.prepare(steps, cols, hists)
            changed: dict[tuple, dict[str, Any]] = {}
            seen = bisect_right(steps, st.last_step)
            unseen = self._unseen
            for point in points:
                upto = bisect_right(steps, point)
                if upto == seen and not unseen:
                    continue
                seen, unseen = upto, False
                intake.upto(point)
                changed.update(self._evaluate([point]))
            intake.upto(last)
            self._unseen = unseen or len(steps) > seen
            return list(changed.values())
        if kind == "end":
            status = frame.get("status")
            st.ended = status if isinstance(status, str) else "finished"
            total = frame.get("total_steps")
            st.end_total_steps = total if isinstance(total, int) else None
            return list(self._evaluate([max(st.last_step, 0)]).values())
        return []

    def alerts(self) -> list[dict[str, Any]]:
        """Copies of every alert so far, active and cleared, in the order they first fired."""
        return self.book.alerts()

    def _evaluate(self, points: list[int]) -> dict[tuple, dict[str, Any]]:
        changed: dict[tuple, dict[str, Any]] = {}
        st = self.state
        for now in points:
            st.memo.clear()
            self._last_eval = max(self._last_eval, now)
            h = self.health.at(st, now)
            st.active = self.book.active_map  # a live view: later rules see earlier rules' verdicts
            for rule in self.rules:
                name = type(rule).__name__
                if name in self.errors:
                    continue
                if rule.static:
                    if self._static_seen.get(id(rule)) == st.facts_version:
                        continue
                    self._static_seen[id(rule)] = st.facts_version
                try:
                    findings = list(rule.check(st, h))
                except Exception as exc:  # one broken rule must not silence the others
                    self.errors[name] = repr(exc)
                    self.error_steps[name] = now
                    # Said once, as an info alert: it goes where alerts go (wire, recording, `--headless`
                    # stderr, the TUI), so a rule that stopped is seen instead of passing for a quiet run.
                    changed[(RULE_ERROR_ID, name)] = rule_error_alert(name, repr(exc), rule.ids, now, self.rank)
                    continue
                if not findings:
                    continue
                for f in findings:
                    alert = self.book.apply(f, now, self.rank)
                    if alert is not None:
                        changed[(f.id, f.cause)] = alert
            st.looked()
        return changed


# The id of the notice a disabled rule sends (not a diagnosis: `accmon check` lists these apart, under
# `disabled_rules`, and they are not in `alerts()`).
RULE_ERROR_ID = "rule_error"


def rule_error_alert(rule: str, error: str, ids: Iterable[str], step: int, rank: int) -> dict[str, Any]:
    """The notice that `rule` raised `error` at `step` and is off for the rest of the run (alert-shaped)."""
    ids = [str(i) for i in ids]
    error = error if len(error) <= 300 else error[:297] + "..."
    what = f" ({', '.join(ids)})" if ids else ""
    return {"id": RULE_ERROR_ID, "cause": rule, "severity": "info", "step": step,
            "message": f"accmon rule {rule} raised {error} and is disabled for this run: its alerts{what} "
                       "are no longer checked",
            "evidence": {"rule": rule, "error": error, "ids": ids},
            "fix": "an accmon bug, not a training one: report it with the recording (`accmon check` re-runs the rules)",
            "state": "active", "last_step": step, "cleared_step": None, "rank": rank}


def interval(step: int) -> int:
    for below, every in EVAL_EVERY:
        if step < below:
            return every
    return EVAL_EVERY_LATE


def evaluation_points(after: int, upto: int) -> list[int]:
    """The steps in (after, upto] at which rules run: multiples of the interval for their part of the run, at
    most MAX_EVALS_PER_FRAME of them, evenly spread, the last always kept. Worked out band by band, never
    walked: a hostile or corrupt frame that jumps a trillion steps costs what a small one does."""
    lo = max(after + 1, 0)
    bands: list[tuple[int, int, int]] = []  # (first point, interval, how many)
    start = 0
    for below, every in (*EVAL_EVERY, (max(upto + 1, EVAL_EVERY[-1][0]), EVAL_EVERY_LATE)):
        a, b = max(lo, start), min(upto, below - 1)
        first = -(-a // every) * every
        if first <= b:
            bands.append((first, every, int((b - first) // every) + 1))
        start = below
    total = sum(n for _, _, n in bands)

    def nth(i: int) -> int:
        for first, every, n in bands:
            if i < n:
                return first + i * every
            i -= n
        raise IndexError(i)

    if total <= MAX_EVALS_PER_FRAME:
        return [nth(i) for i in range(total)]
    stride = total / MAX_EVALS_PER_FRAME
    return [nth(int(i * stride)) for i in range(MAX_EVALS_PER_FRAME - 1)] + [nth(total - 1)]
