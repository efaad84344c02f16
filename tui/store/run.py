"""`RunStore`: one run as the viewer knows it; frames in, per-rank series, alerts and its outcome out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .alerts import AlertBook
from .groups import SHARD_PREFIX, RankGroup, ShardCombiner
from .outcome import Outcome, run_outcome
from .rank import MAX_RANKS, RankData


@dataclass
class Changes:
    """What one batch of frames changed: the app redraws only the widgets that show it."""

    steps: set[int] = field(default_factory=set)  # ranks with new rows
    alerts: bool = False
    facts: bool = False
    meta: bool = False
    ended: bool = False
    malformed: int = 0

    def __bool__(self) -> bool:
        return bool(self.steps or self.alerts or self.facts or self.meta or self.ended or self.malformed)


def _always() -> bool:
    return True


class RunStore:
    """One run as the viewer knows it: meta, facts, per-rank series, alerts, how it ended."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.meta: dict[int, dict[str, Any]] = {}
        self.facts: dict[str, Any] = {}
        self.ranks: dict[int, RankData] = {}
        self.alerts = AlertBook()
        self.ends: dict[int, dict[str, Any]] = {}
        self.exit: dict[str, Any] | None = None
        self.malformed = 0
        # Steps the probe's queue dropped so far, as its heartbeats say (set by the live source): shown before the end.
        self.live_dropped = 0
        self.last_problem: str | None = None
        self.frames = 0
        self.version = 0
        # Sharded models: the ranks' grad_sq/<layer> combined into true norms (None until a rank sends one).
        self.shards: ShardCombiner | None = None
        self._group: RankGroup | None = None
        self._outcome: tuple[tuple, Outcome] | None = None  # (what it was computed from, outcome())

    def rank(self, r: int) -> RankData:
        data = self.ranks.get(r)
        if data is None:
            data = self.ranks[r] = RankData(r)
        return data

    @property
    def name(self) -> str | None:
        m = self.meta.get(0) or next(iter(self.meta.values()), {})
        return m.get("name") if isinstance(m.get("name"), str) else None

    def ingest(self, frames: Iterable[dict[str, Any]]) -> Changes:
        """Apply decoded frames. A frame that does not fit the contract is counted and skipped, never raised."""
        ch = Changes()
        for frame in frames:
            try:
                self._ingest_one(frame, ch)
            except Exception as exc:  # malformed input gets a clear note, never a crash (design.md, principle 4)
                self.malformed += 1
                ch.malformed += 1
                kind = frame.get("kind") if isinstance(frame, dict) else type(frame).__name__
                self.last_problem = f"ignored a malformed {kind} frame: {exc.__class__.__name__}: {exc}"
        if self.shards is not None and (ch.steps or ch.ended) and self.shards.update(self):
            ch.steps.add(self.shards.data.rank)
        if ch:
            self.version += 1
        return ch

    def all_ranks(self) -> RankGroup:
        """Every rank together (the same object while the set of ranks stays the same: charts cache on it)."""
        ids = sorted(self.ranks)
        if self._group is None or self._group.rank_ids != ids:
            self._group = RankGroup([self.ranks[r] for r in ids])
        return self._group

    def sharded(self) -> RankData | None:
        """The combined per-layer gradient norms of a sharded run, once a step has been combined."""
        return self.shards.data if self.shards is not None and self.shards.data.axis.n else None

    def _ingest_one(self, frame: dict[str, Any], ch: Changes) -> None:
        kind = frame["kind"]
        rank = frame.get("rank", 0)
        if not isinstance(rank, int):
            raise TypeError(f"rank {rank!r} is not an int")
        if rank not in self.ranks and len(self.ranks) >= MAX_RANKS:
            raise ValueError(f"more than {MAX_RANKS} ranks in one run: rank {rank} left out")
        self.frames += 1
        if self.run_id is None and isinstance(frame.get("run"), str):
            self.run_id = frame["run"]
        if kind == "steps":
            if not isinstance(frame.get("steps"), (list, np.ndarray)) or not isinstance(frame.get("cols", {}), dict):
                raise TypeError("steps frame without a steps list and a cols map")
            self.rank(rank).add_steps(frame)
            ch.steps.add(rank)
            if self.shards is None and any(isinstance(k, str) and k.startswith(SHARD_PREFIX) for k in frame["cols"]):
                self.shards = ShardCombiner()
        elif kind == "alert":
            if not self.alerts.update(frame["alert"], rank):
                raise ValueError("alert without an id")
            ch.alerts = True
        elif kind == "facts":
            facts = frame["facts"]
            if not isinstance(facts, dict):
                raise TypeError("facts is not a map")
            if rank == 0 or not self.facts:
                self.facts.update(facts)
            ch.facts = True
        elif kind == "meta":
            self.meta[rank] = {k: v for k, v in frame.items() if k not in ("v", "kind", "seq")}
            self.rank(rank)
            ch.meta = True
        elif kind == "end":
            self.ends[rank] = frame
            ch.ended = True
        elif kind == "exit":
            self.exit = frame
            ch.ended = True

    # -- summaries for the header -----------------------------------------------------------------------
    def outcome(self) -> Outcome:
        """How the run ended, as `check` says it of the same frames (run_outcome). The store cannot tell a silent
        rank from a dead one before the command's exit frame (its source can, and says "gone"): until then a rank
        with no end frame is still running. Kept until a frame changes the store: the header asks every tick, and
        with thousands of ranks one answer costs milliseconds."""
        key = (self.version, self.live_dropped, len(self.ends), len(self.ranks), self.exit is not None)
        if self._outcome is None or self._outcome[0] != key:
            exits = [self.exit] if self.exit is not None else []
            self._outcome = key, run_outcome(
                self.meta.keys() | self.ranks.keys(), self.ends.values(), exits,
                lost=bool(self.loss()["lost"]), running=_always,
                last_heard={r: d.last_t for r, d in self.ranks.items() if d.last_t is not None},
                last_step={r: d.axis.last for r, d in self.ranks.items() if d.axis.last is not None})
        return self._outcome[1]

    def status(self) -> str | None:
        """'finished', 'crashed' or 'truncated' once the run ended; None while it runs. A run that lost steps,
        or whose command exited with no end frame (its recording cut short), is never 'finished'."""
        if not self.ends and self.exit is None:
            return None  # what run_outcome says of it, without a look at every rank on every tick of a live run
        status = self.outcome().status
        return None if status == "running" else status

    def loss(self) -> dict[str, Any]:
        """What the viewer holds of the run, for the header: `logged` (steps the ranks that ended logged, None
        before every rank's end frame), `received`, `lost` (logged and never received: dropped by the probe's
        queue, or no longer held when the viewer joined), `dropped` (of those, the probe's queue's, from the end
        frames and, live, `live_dropped`), `complete` (ended, every step received)."""
        received = sum(d.axis.n for d in self.ranks.values())
        logged: int | None = None
        lost = dropped = 0
        for r, e in self.ends.items():
            total, drop = e.get("total_steps"), e.get("dropped_steps")
            if isinstance(total, int) and not isinstance(total, bool):
                logged = (logged or 0) + total
                data = self.ranks.get(r)
                lost += max(0, total - (data.axis.n if data is not None else 0))
            if isinstance(drop, int) and not isinstance(drop, bool):
                dropped += max(0, drop)
        if logged is not None and len(self.ends) < len(self.ranks):
            logged = None
        dropped = max(dropped, self.live_dropped)
        ended = bool(self.ends) and (self.meta.keys() | self.ranks.keys()) <= self.ends.keys()  # as run_outcome says
        return {"logged": logged, "received": received, "lost": max(lost, dropped) if lost or dropped else 0,
                "dropped": dropped, "complete": ended and not lost and not dropped}

    def stopped(self) -> dict[str, Any] | None:
        """Who stopped the run, when it did not crash (the user's Ctrl-C): the first end frame that says so."""
        return self.outcome().stopped if self.ends else None

    def error(self) -> str | None:
        """Why the run crashed (a crashed end frame without its words: "crashed"), or None."""
        if not self.ends and self.exit is None:
            return None
        o = self.outcome()
        if o.error is not None:
            return str(o.error)
        return "crashed" if o.status == "crashed" else None

    def last_step(self) -> int | None:
        lasts = [d.axis.last for d in self.ranks.values() if d.axis.last is not None]
        return max(lasts) if lasts else None

    def first_step(self) -> int | None:
        firsts = [d.axis.first for d in self.ranks.values() if d.axis.first is not None]
        return min(firsts) if firsts else None
