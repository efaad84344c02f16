"""`accmon attach --headless [--record FILE]`: receive a run without the TUI, print alerts, record frames.

A viewer-side recorder for scripts and CI: it writes the very bytes it received, in seq order, history
first, and ends when the run ends (or its process is gone).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from accmon.probe import registry
from accmon.probe.recording import RecordingError, RecordingReader

from .live import SILENT_GONE_S, LiveRun, client_for
from .on_alert import AlertCommand
from .store import Outcome, run_outcome, stop_words
from .subscriber import RunClient
from .text import RULE_ERROR_ID, format_alert, printable

SILENT_SAY_S = 5.0  # with nothing received by then, say what is being waited for (never wait in silence)


class HeadlessViewer:
    """Prints a live run: alerts and state changes as lines, and at the end how it ended. The run itself (the
    clients, discovery, the recording, the cross-rank rules) is a `LiveRun`, driven from the caller's thread."""

    def __init__(self, entries: list[registry.RunEntry], *, record: str | None = None, out: TextIO = sys.stderr,
                 quiet: bool = False, discover: bool = True, on_alert: AlertCommand | None = None) -> None:
        self.on_alert = on_alert  # --on-alert: the user's command, told of each new alert (closed with the viewer)
        self.out = out
        self.quiet = quiet
        self.ended: dict[int, str] = {}  # rank → its end frame's status
        self.ends: list[dict] = []  # the end frames, as they came: `outcome` reads them as `check` does
        # Per rank: the steps received (each new step once), and what its end frame says it logged and dropped.
        self.received: dict[int, int] = {}
        self.logged: dict[int, int] = {}
        self.dropped = 0
        self.frames = 0
        self.steps = 0
        self.last_step = -1
        self.alerts: list[dict] = []
        self.rule_errors: dict[str, str] = {}  # rule → the error that disabled it in the probe (said once)
        self._rank_last: dict[int, int] = {}
        self._rank_first: dict[int, int] = {}
        # Ranks register one by one (torchrun starts them in parallel): the run keeps looking for the others.
        self.live = LiveRun(entries, record=record, discover=discover, on_event=self.say,
                            client_factory=lambda e: client_for(e, arrays=False)).start()

    @property
    def entries(self) -> list[registry.RunEntry]:
        return self.live.entries

    @property
    def clients(self) -> list[RunClient]:
        return [c for _, c in self.live.clients]

    @property
    def run_id(self) -> str | None:
        return self.live.run_id

    @property
    def world_size(self) -> int:
        return self.live.world_size

    def last_heard(self) -> dict[int, float]:
        """Per rank, when it was last heard (LiveRun.last_heard): for the exit frames `accmon run` appends."""
        return self.live.last_heard()

    def say(self, line: str) -> None:
        if not self.quiet:
            self.out.write(f"accmon: {printable(line)}\n")
            self.out.flush()

    def pump(self) -> int:
        """Handle what has arrived (recorded and diagnosed across ranks by the LiveRun); return the number of
        frames received."""
        n = 0
        for received in self.live.pump():
            n += received.count
            for frame in received.frames:
                self.handle(frame, received.entry.rank)
        self.frames += n
        return n

    def handle(self, frame: dict, rank: int) -> None:
        """One frame of `rank` (the cross-rank alerts come as alert frames): count its steps, say its alerts, note
        its end."""
        kind = frame["kind"]
        if kind == "steps":
            steps = frame["steps"]
            self.steps += len(steps)
            last = self._rank_last.get(rank, -1)
            self.received[rank] = self.received.get(rank, 0) + sum(1 for s in steps if s > last)
            if len(steps):
                self._rank_last[rank] = max(last, max(steps))
                self._rank_first[rank] = min(self._rank_first.get(rank, steps[0]), min(steps))
            self.last_step = max(self.last_step, steps[-1] if len(steps) else -1)
        elif kind == "alert" and isinstance(frame.get("alert"), dict):
            self.alerts.append(frame["alert"])
            if frame["alert"].get("id") == RULE_ERROR_ID:
                self._rule_error(frame["alert"], frame["rank"])
            else:
                self.say(format_alert(frame["alert"]))
                if self.on_alert is not None:
                    self.on_alert.offer(frame["alert"], rank)
        elif kind == "end":
            self.ended[rank] = str(frame.get("status"))
            self.ends.append({"rank": rank, "status": frame.get("status"), "error": frame.get("error"),
                              "stopped": frame.get("stopped")})
            total, dropped = frame.get("total_steps"), frame.get("dropped_steps")
            if isinstance(total, int) and not isinstance(total, bool):
                self.logged[rank] = total
            if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
                self.dropped += dropped

    def steps_words(self, verb: str) -> str:
        """'4,700 steps received (steps 0 to 4,699)': each step once (a step whose values came in two frames counts
        once), and the range they span; several ranks: their steps added up, and how many ranks."""
        if not self.received:
            return f"no steps {verb}"
        total = sum(self.received.values())
        first, last = min(self._rank_first.values()), max(self._rank_last.values())
        ranks = f" from {len(self.received)} ranks" if len(self.received) > 1 else ""
        span = f"step {first:,}" if first == last else f"steps {first:,} to {last:,}"
        return f"{total:,} step{'s' if total != 1 else ''} {verb}{ranks} ({span})"

    def outcome(self) -> Outcome:
        """How the run ended, read from its end frames by the same `run_outcome` as `check` and the viewer's
        header, once the run is over: a rank with no end frame by then stopped without one."""
        ranks = set(self.received) | {e.rank for e in self.entries}
        return run_outcome(ranks, self.ends, [], lost=self.lost() > 0, last_heard=self.last_heard(),
                           last_step=self._rank_last)

    def end_words(self) -> str:
        """How the run ended: 'crashed (RuntimeError: …)', 'finished', 'finished, stopped by the user (Ctrl-C) at
        step 41', 'ended incomplete' (steps lost), 'ended without an end frame'."""
        o = self.outcome()
        if o.status == "crashed":
            return f"crashed ({o.error})" if o.error else "crashed"
        if o.status == "finished":
            stop = stop_words(o.stopped)
            return f"finished, {stop}" if stop else "finished"
        return "ended incomplete" if self.ends else "ended without an end frame"

    def lost(self) -> int:
        """Steps the ranks that ended logged but this viewer never received (dropped, or no longer held)."""
        return sum(max(0, n - self.received.get(r, 0)) for r, n in self.logged.items())

    def _loss_words(self) -> str:
        lost = self.lost()
        if not lost:
            return ""
        logged = sum(self.logged.values())
        why = f"; the probe's queue dropped {self.dropped} (a logger faster than its I/O)" if self.dropped else ""
        return f"; STEPS LOST: {lost} of {logged} logged were never received{why}"

    def _rule_error(self, alert: dict, rank: int) -> None:
        """A rule the probe disabled after it raised: one line per rule, whichever rank said it first."""
        evidence: dict = alert["evidence"] if isinstance(alert.get("evidence"), dict) else {}
        rule = str(alert.get("cause") or evidence.get("rule") or "?")
        if rule in self.rule_errors:
            return
        self.rule_errors[rule] = str(evidence.get("error", alert.get("message", "")))
        ids = evidence.get("ids") if isinstance(evidence.get("ids"), list) else []
        lost = f"; not checked from here on: {', '.join(map(str, ids))}" if ids else ""
        where = f" rank {rank}" if rank else ""
        self.say(f"rule {rule} disabled at step {alert.get('step')}{where} by an error: {self.rule_errors[rule]}{lost}")

    def run(self, *, until: Callable[[], bool] | None = None, poll: float = 0.1) -> int:
        """Receive until every rank ended, its process is gone (a run attached by endpoint: it fell silent), or
        `until()` says so. Returns an exit code."""
        started = time.monotonic()
        said_waiting = False
        try:
            while True:
                got = self.pump()
                if not said_waiting and not self.frames and time.monotonic() - started > SILENT_SAY_S:
                    said_waiting = True
                    where = ", ".join(e.pub for e in self.entries)
                    self.say(f"nothing received yet from {where}; still waiting (is the run up? Ctrl-C stops)")
                self.live.tick()  # ranks that register late, the recording's sync
                if len(self.ended) == len(self.entries) >= self.world_size:
                    break
                if until is not None and until():
                    self._drain_after_exit()
                    break
                if not got:
                    if self.live.all_gone():
                        self._drain_after_exit()
                        break
                    self.live.wait(poll)
        finally:
            self.close()
        outcome = self.outcome()
        missing = sorted(e.rank for e in self.entries if e.rank not in self.ended)
        if missing:
            which = ", ".join(map(str, missing))
            # A run attached by endpoint names no process: all that is known is that it fell silent.
            how = "stopped without an end frame (killed or crashed)" if any(
                e.pid > 0 for e in self.entries if e.rank in missing) else \
                f"fell silent without an end frame (no frame or heartbeat for {SILENT_GONE_S:.0f} s: killed, " \
                "crashed or unreachable)"
            self.say(f"rank {which} {how}; {self.steps_words('received')}")
            return 1
        self.say(f"run {self.end_words()}: {self.steps_words('received')}{self._loss_words()}")
        # 3, as `accmon check` says it: the record of the run is incomplete.
        return 1 if outcome.status == "crashed" else 3 if outcome.status != "finished" else 0

    def _drain_after_exit(self, grace: float = 1.0) -> None:
        """The process is gone: give frames already in flight a moment to arrive."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and len(self.ended) < len(self.entries):
            if not self.pump():
                time.sleep(0.05)

    def close(self) -> None:
        self.live.close()
        if self.on_alert is not None:
            self.on_alert.close()


def say_recorded(path: str, out: TextIO | None = None) -> None:
    """What a headless viewer would have said of a run that ended before it attached (a few fast steps), read
    from the run's recording: its alerts as they were raised, then how it ended."""
    viewer = HeadlessViewer([], out=out or sys.stderr, discover=False)
    try:
        for frame in RecordingReader(path).frames():
            for f in [frame, *viewer.live.diagnose(frame)]:
                viewer.handle(f, frame.get("rank", 0))
    except (OSError, RecordingError) as exc:
        viewer.say(f"the run ended before it could be watched; its recording cannot be read: {exc}")
        return
    viewer.say(f"run {viewer.end_words()}: {viewer.steps_words('recorded')}{viewer._loss_words()} "
               "(it ended before the viewer attached)")
