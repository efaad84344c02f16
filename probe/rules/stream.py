"""A whole run's frames in, every rank's alerts out: the one diagnosis `accmon check`, replay's rules child and
the live viewers share.

Each rank's own rules (`Diagnoser`) run on that rank's frames; the cross-rank rules (`RankDiagnoser`) see every
frame of every rank. A live viewer needs only the cross-rank part (each probe already sends its own rank's
alerts): `StreamDiagnosis(per_rank=False)`.
"""

from __future__ import annotations

from typing import Any

from .diagnoser import Diagnoser
from .ranks import RankDiagnoser

# Ranks one diagnosis follows: a file naming more (issue 16: 20,000 ranks in 1.3 MB took minutes, the cross-rank
# rules growing faster than the ranks) has the others' frames left out, and `accmon check` says so.
MAX_RANKS = 256
LEFT_OUT_KEPT = 100_000


class StreamDiagnosis:
    def __init__(self, *, per_rank: bool = True) -> None:
        self.per_rank = per_rank
        self.diagnosers: dict[int, Diagnoser] = {}
        self.cross = RankDiagnoser()
        self._ranks: set[int] = set()
        self._left_out: set[int] = set()  # ranks past MAX_RANKS (up to LEFT_OUT_KEPT of them, to count them)

    def follows(self, rank: int) -> bool:
        """Whether `rank`'s frames are diagnosed: the first MAX_RANKS ranks seen are."""
        if rank in self._ranks:
            return True
        if len(self._ranks) >= MAX_RANKS:
            if len(self._left_out) < LEFT_OUT_KEPT:
                self._left_out.add(rank)
            return False
        self._ranks.add(rank)
        return True

    @property
    def ranks_left_out(self) -> int:
        return len(self._left_out)

    def observe(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """The alerts this frame raised, changed or cleared. Alert frames are skipped: they are what the rules
        said when the run was recorded, not evidence. May raise on a frame the rules cannot read."""
        rank = frame.get("rank", 0)
        if not self.follows(rank) or frame.get("kind") == "alert":
            return []
        out = self.cross.observe(frame)
        if self.per_rank:
            d = self.diagnosers.get(rank)
            if d is None:
                d = self.diagnosers[rank] = Diagnoser()
            out = d.observe(frame) + out
        return out

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of the run so far, active and cleared, each rank's then the cross-rank ones; the cross-rank
        rules first finish what the end of the stream tells them."""
        self.cross.finish()
        return [a for d in self.diagnosers.values() for a in d.alerts()] + self.cross.alerts()

    def disabled_rules(self) -> list[dict[str, Any]]:
        """Every rule a rank's Diagnoser disabled after it raised: that diagnosis is missing its alerts."""
        out = []
        for rank, d in sorted(self.diagnosers.items()):
            ids = {type(r).__name__: list(getattr(r, "ids", ())) for r in d.rules}
            for rule, error in d.errors.items():
                out.append({"rule": rule, "error": str(error), "step": d.error_steps.get(rule), "rank": rank,
                            "ids": ids.get(rule, [])})
        return out
