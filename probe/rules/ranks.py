"""Rules that need every rank at once: a rank that diverges, a straggler, a rank that stopped.

Each rank's probe diagnoses its own stream (accmon.probe.rules); only a viewer sees all ranks, so these run
there — in `accmon check`, the headless viewer and the TUI — over the same frames. Pure Python, no torch.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import wire

# NVIDIA Resiliency Extension's straggler detection scores each rank against the fastest one (relative
# performance score, 1.0 = as fast as the best); NeMo's example configuration flags ranks below 0.7.
STRAGGLER_SCORE = 0.7
# ...and at least this much slower per step, in seconds: ranks whose steps take microseconds (a shared CPU,
# the OS scheduling one process later than another) differ by large ratios that cost nothing.
STRAGGLER_MIN_GAP_S = 0.005
# Step times are compared over the same this-many recent steps on every rank, by their median, so one slow step
# (a checkpoint, a GC pause, a rank descheduled for a moment on a loaded machine) does not make a straggler.
STEP_TIME_WINDOW = 50
# Step times kept per rank (step, seconds): enough that ranks reporting apart (a frame holds about 0.5 s of
# steps) and a straggler falling behind still share a window.
STEP_TIME_KEPT = 8 * STEP_TIME_WINDOW
# In data-parallel training every rank sees different batches, so per-rank losses differ by batch noise only.
# A rank whose recent mean loss is this many times the others' median — or NaN while theirs is finite —
# has diverged (a corrupt shard, a bad GPU, a desynchronised replica). A margin of our own, not a published
# one: averaged over 50 steps, batch noise between ranks of one run is far smaller than 2×.
LOSS_DIVERGENCE_RATIO = 2.0
LOSS_WINDOW = 50
# Live, a rank is stopped when the newest frame of any rank is this much later than its own last frame (and
# it sent no end frame): at least 30 s — DataLoader worker start-up and checkpoints take seconds — and at least
# 50 of its own steps. Ranks start seconds apart, so a lag in *steps* alone says nothing.
STOPPED_AFTER_S = 30.0
STOPPED_AFTER_STEPS = 50


@dataclass
class _RankState:
    last_step: int = -1
    ended: str | None = None
    step_times: deque = field(default_factory=lambda: deque(maxlen=STEP_TIME_KEPT))  # (step, seconds)

    def recent_step_times(self, upto: int) -> list[float]:
        """The step times of steps (upto - STEP_TIME_WINDOW, upto], newest first."""
        out = []
        for step, seconds in reversed(self.step_times):
            if step <= upto - STEP_TIME_WINDOW:
                break
            if step <= upto:
                out.append(seconds)
        return out
    losses: deque = field(default_factory=lambda: deque(maxlen=4 * LOSS_WINDOW))  # (step, loss)
    last_time: float | None = None


class RankDiagnoser:
    """Cross-rank alerts from the frames of every rank of one run (any interleaving)."""

    def __init__(self) -> None:
        self.ranks: dict[int, _RankState] = {}
        self._alerts: dict[tuple[str, int], dict[str, Any]] = {}
        self._frames_since_look = 0

    def observe(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        rank = frame.get("rank", 0)
        st = self.ranks.setdefault(rank, _RankState())
        kind = frame.get("kind")
        if kind == "steps":
            # as_list: a viewer may have decoded the frame's packed columns as arrays.
            steps, times = wire.as_list(frame.get("steps")), wire.as_list(frame.get("times"))
            losses = wire.as_list(frame.get("cols", {}).get("loss"))
            for i, step in enumerate(steps):
                t = times[i] if i < len(times) else None
                if t is not None and st.last_time is not None and step > st.last_step >= 0:
                    st.step_times.append((step, (t - st.last_time) / (step - st.last_step)))
                if t is not None:
                    st.last_time = t
                st.last_step = max(st.last_step, step)
                if i < len(losses) and losses[i] is not None:
                    st.losses.append((step, float(losses[i])))
        elif kind == "end":
            st.ended = str(frame.get("status", "finished"))
        else:
            return []
        if len(self.ranks) < 2:
            return []
        # Each look costs time in the number of ranks: with many ranks, look once per round of their frames (an
        # eighth of the ranks' worth), not after every one, so a file of many ranks is read in linear time.
        self._frames_since_look += 1
        if kind == "steps" and self._frames_since_look < len(self.ranks) // 8:
            return []
        self._frames_since_look = 0
        return [alert for found in (self._straggler(), self._divergence(), self._stopped()) for alert in found]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._alerts.values())

    def finish(self) -> list[dict[str, Any]]:
        """At the end of a recording: a rank with no end frame, while another rank ended, stopped early. When
        none ended (a launcher such as torchrun kills the others once one dies), the first to fall silent did."""
        if len(self.ranks) < 2:
            return []
        silent = [r for r, s in self.ranks.items() if s.ended is None]
        if len(silent) == len(self.ranks):
            silent = [min(silent, key=lambda r: self.ranks[r].last_time or 0.0)]
        newest = max(x.last_step for x in self.ranks.values())
        return [a for rank in silent for a in self._stopped_alert(rank, True, newest)]

    # -- rules --------------------------------------------------------------------------------------------
    def _straggler(self) -> list[dict[str, Any]]:
        # The same steps on every rank: ranks report apart (a frame holds about 0.5 s of steps) and a machine's
        # speed changes over time, so windows of different steps would compare different moments. In lockstep
        # (data parallel) training a rank's time per step is then the others' within scheduling noise.
        live = {r: s for r, s in self.ranks.items() if s.ended is None and s.step_times}
        if len(live) < 2:
            return []
        common = min(s.step_times[-1][0] for s in live.values())
        medians = {}
        for r, s in live.items():
            window = s.recent_step_times(common)
            if len(window) >= STEP_TIME_WINDOW // 2:
                medians[r] = statistics.median(window)
        if len(medians) < 2:
            return []
        best = min(medians.values())
        changed = []
        for rank, median in medians.items():
            score = best / median if median > 0 else 1.0
            active = score < STRAGGLER_SCORE and median - best >= STRAGGLER_MIN_GAP_S
            changed += self._update("straggler_rank", rank, active, "warning",
                                    f"rank {rank} runs at {score:.0%} of the fastest rank's speed",
                                    {"rank": rank, "relative_speed": round(score, 3), "step_time_s": median,
                                     "fastest_step_time_s": best, "threshold": STRAGGLER_SCORE,
                                     "min_gap_s": STRAGGLER_MIN_GAP_S},
                                    "every step waits for the slowest rank: look for a slow data loader on that rank "
                                    "(more workers, pinned memory), a throttled or shared GPU, or a failing node")
        return changed

    def _divergence(self) -> list[dict[str, Any]]:
        # Compare the same steps on every rank: ranks run apart, and the loss falls as training goes on.
        common = min(s.last_step for s in self.ranks.values())
        window = range(common - LOSS_WINDOW + 1, common + 1)
        means = {}
        for r, s in self.ranks.items():
            vals = [v for step, v in s.losses if step in window]
            if len(vals) >= LOSS_WINDOW // 2:
                means[r] = statistics.fmean(vals)
        if len(means) < 2:
            return []
        changed = []
        finite = sorted(m for m in means.values() if math.isfinite(m))
        for rank, mean in means.items():
            ref = _median_without(finite, mean)
            if ref is None:
                continue
            diverged = (not math.isfinite(mean)) or (ref > 0 and mean > LOSS_DIVERGENCE_RATIO * ref)
            changed += self._update("rank_diverging", rank, diverged, "critical" if not math.isfinite(mean) else "warning",
                                    f"rank {rank}'s loss ({mean:.4g}) is far from the other ranks' ({ref:.4g})",
                                    {"rank": rank, "loss": mean, "others_median_loss": ref, "ratio_threshold": LOSS_DIVERGENCE_RATIO},
                                    "ranks train the same model on different data: check that rank's data shard, "
                                    "that all ranks start from the same weights (broadcast or seed), and that rank's GPU")
        return changed

    def _stopped(self) -> list[dict[str, Any]]:
        newest = max((s.last_time for s in self.ranks.values() if s.last_time is not None), default=None)
        newest_step = max(x.last_step for x in self.ranks.values())
        changed = []
        for rank, s in self.ranks.items():
            if s.ended == "crashed":
                changed += self._stopped_alert(rank, True, newest_step)
                continue
            if s.ended is not None or newest is None or s.last_time is None:
                continue
            recent = s.recent_step_times(s.last_step)
            own = statistics.median(recent) if recent else 0.0
            silent = newest - s.last_time
            changed += self._stopped_alert(rank, silent > max(STOPPED_AFTER_S, STOPPED_AFTER_STEPS * own), newest_step)
        return changed

    def _stopped_alert(self, rank: int, active: bool, newest: int) -> list[dict[str, Any]]:
        s = self.ranks[rank]
        return self._update("rank_stopped", rank, active, "critical",
                            f"rank {rank} stopped at step {s.last_step} while others reached {newest}",
                            {"rank": rank, "last_step": s.last_step, "others_step": newest, "ended": s.ended},
                            "look at that rank's log for an error or an OOM kill; the other ranks will hang "
                            "in their next collective until the timeout")

    def _update(self, alert_id: str, rank: int, active: bool, severity: str, message: str,
                evidence: dict[str, Any], fix: str) -> list[dict[str, Any]]:
        key = (alert_id, rank)
        current = self._alerts.get(key)
        step = self.ranks[rank].last_step
        if active and (current is None or current["state"] == "cleared"):
            alert = {"id": alert_id, "severity": severity, "step": step, "message": message, "evidence": evidence,
                     "fix": fix, "state": "active", "last_step": step, "cleared_step": None, "rank": rank}
            self._alerts[key] = alert
            return [alert]
        if not active and current is not None and current["state"] == "active":
            current.update(state="cleared", cleared_step=step, last_step=step)
            return [current]
        if active and current is not None:
            current.update(last_step=step, evidence=evidence, message=message)
        return []


def _median_without(values: list[float], v: float) -> float | None:
    """The median of sorted `values` with one copy of `v` taken out (when it is there): the other ranks' median,
    in constant time per rank instead of a list of the others for each."""
    i = bisect.bisect_left(values, v) if math.isfinite(v) else len(values)
    drop = i < len(values) and values[i] == v
    n = len(values) - drop
    if n == 0:
        return None

    def at(k: int) -> float:
        return values[k + 1] if drop and k >= i else values[k]

    mid = n // 2
    return at(mid) if n % 2 else (at(mid - 1) + at(mid)) / 2
