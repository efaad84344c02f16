"""`accmon attach --headless [--record FILE]`: receive a run without the TUI, print alerts, record frames.

A viewer-side recorder for scripts and CI: it writes the very bytes it received, in seq order, history
first, and ends when the run ends (or its process is gone).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from accmon.probe import registry, security
from accmon.probe.recording import RecordingWriter
from accmon.probe.rules import StreamDiagnosis

from .app_sources import SILENT_GONE_S, rank_gone
from .check import RULE_ERROR_ID, format_alert, printable
from .on_alert import AlertCommand
from .store import clean_stop, stop_words
from .subscriber import RunClient

SYNC_S = 1.0
SILENT_SAY_S = 5.0  # with nothing received by then, say what is being waited for (never wait in silence)


class HeadlessViewer:
    """Drives one RunClient per rank; prints alerts and state changes; optionally records."""

    def __init__(self, entries: list[registry.RunEntry], *, record: str | None = None, out: TextIO = sys.stderr,
                 quiet: bool = False, discover: bool = True, on_alert: AlertCommand | None = None) -> None:
        self.on_alert = on_alert  # --on-alert: the user's command, told of each new alert (closed with the viewer)
        self.entries: list[registry.RunEntry] = []
        self.clients: list[RunClient] = []
        self.run_id = entries[0].run_id if entries else None
        # Ranks register one by one (torchrun starts them in parallel): keep looking for the others.
        self.discover = discover and self.run_id not in (None, "?")
        self.world_size = max((e.world_size for e in entries), default=1)
        for e in entries:
            self._add(e)
        self.writer = RecordingWriter(record) if record else None
        self.out = out
        self.quiet = quiet
        self.ended: dict[int, str] = {}
        # Per rank: the steps received (each new step once), and what its end frame says it logged and dropped.
        self.received: dict[int, int] = {}
        self.logged: dict[int, int] = {}
        self.dropped = 0
        self.frames = 0
        self.steps = 0
        self.last_step = -1
        self.alerts: list[dict] = []
        self.rule_errors: dict[str, str] = {}  # rule → the error that disabled it in the probe (said once)
        self.rank_rules = StreamDiagnosis(per_rank=False)  # cross-rank alerts: only a viewer of every rank raises them
        self._rank_last: dict[int, int] = {}
        self._rank_first: dict[int, int] = {}
        self.stopped: dict | None = None  # who stopped the run, when not a crash (the end frame's `stopped`)

    def _add(self, entry: registry.RunEntry) -> None:
        self.entries.append(entry)
        self.clients.append(RunClient(entry.pub, entry.ctl, curve=security.curve_for(entry.pub, entry.extra)).start())

    def _discover(self) -> None:
        # By process, not rank alone: under Lightning's ddp_spawn the launching process registered rank 0 before
        # it spawned the real rank 0. Only this host's: another host's sockets (listed from a shared
        # $ACCMON_REGISTRY) are not reachable here.
        known = {(e.rank, e.pid) for e in self.entries}
        for e in registry.list_runs(here=True):
            if e.run_id == self.run_id and (e.rank, e.pid) not in known:
                self._add(e)
                self.world_size = max(self.world_size, e.world_size)
                self.say(f"rank {e.rank} joined (pid {e.pid})")

    def last_heard(self) -> dict[int, float]:
        """Per rank, the wall time of its last frame or heartbeat, or of its connection closing: a rank killed in a
        collective falls silent before the ranks waiting on it, which keep heartbeating until their launcher stops
        them."""
        out: dict[int, float] = {}
        for entry, client in zip(self.entries, self.clients):
            if client.heard_at is not None:
                out[entry.rank] = max(out.get(entry.rank, 0.0), client.heard_at)
        return out

    def say(self, line: str) -> None:
        if not self.quiet:
            self.out.write(f"accmon: {printable(line)}\n")
            self.out.flush()

    def pump(self) -> int:
        """Handle what has arrived; return the number of frames."""
        n = 0
        for entry, client in zip(self.entries, self.clients):
            batch = client.drain_with_bytes()
            if not batch:
                continue
            n += len(batch)
            if self.writer is not None:
                try:
                    self.writer.write([payload for _, payload in batch])
                except OSError as exc:
                    self.say(f"recording to {self.writer.path} stopped: {exc.strerror or exc}; frames so far are kept")
                    self.writer = None
            for frame, _ in batch:
                self.handle(frame, entry.rank)
        self.frames += n
        return n

    def handle(self, frame: dict, rank: int) -> None:
        """One frame of `rank`: count its steps, say its alerts, note its end."""
        kind = frame["kind"]
        for alert in self.rank_rules.observe(frame):
            self.alerts.append(alert)
            self.say(format_alert(alert))
            if self.on_alert is not None:
                self.on_alert.offer(alert, rank)
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
            self.stopped = self.stopped or clean_stop(frame.get("stopped"))
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

    def end_words(self) -> str:
        """How the run ended: 'crashed', 'finished', 'finished, stopped by the user (Ctrl-C) at step 41' …"""
        crashed = [s for s in self.ended.values() if s != "finished"]
        state = "crashed" if crashed else "finished" if self.ended and not self.lost() else "ended incomplete" \
            if self.ended else "ended without an end frame"
        stop = stop_words(self.stopped) if not crashed else None
        return f"{state}, {stop}" if stop else state

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
        last_sync = last_discovery = started = time.monotonic()
        said_waiting = False
        try:
            while True:
                got = self.pump()
                if not said_waiting and not self.frames and time.monotonic() - started > SILENT_SAY_S:
                    said_waiting = True
                    where = ", ".join(e.pub for e in self.entries)
                    self.say(f"nothing received yet from {where}; still waiting (is the run up? Ctrl-C stops)")
                if self.discover and time.monotonic() - last_discovery > 0.5:
                    last_discovery = time.monotonic()
                    self._discover()
                if len(self.ended) == len(self.entries) >= self.world_size:
                    break
                if until is not None and until():
                    self._drain_after_exit()
                    break
                if not got:
                    if self._all_gone():
                        self._drain_after_exit()
                        break
                    for c in self.clients:
                        c.wake.wait(poll)
                        break
                if self.writer is not None and time.monotonic() - last_sync > SYNC_S:
                    last_sync = time.monotonic()
                    self.writer.sync()
        finally:
            self.close()
        crashed = [s for s in self.ended.values() if s != "finished"]
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
        lost = self.lost()
        self.say(f"run {self.end_words()}: {self.steps_words('received')}{self._loss_words()}")
        # 3, as `accmon check` says it: the record of the run is incomplete.
        return 1 if crashed else 3 if lost else 0

    def _all_gone(self) -> bool:
        # An entry attached by endpoint names no process: its connection says whether it is still there.
        return all(rank_gone(e, c) for e, c in zip(self.entries, self.clients))

    def _drain_after_exit(self, grace: float = 1.0) -> None:
        """The process is gone: give frames already in flight a moment to arrive."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and len(self.ended) < len(self.entries):
            if not self.pump():
                time.sleep(0.05)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.on_alert is not None:
            self.on_alert.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def say_recorded(path: str, out: TextIO | None = None) -> None:
    """What a headless viewer would have said of a run that ended before it attached (a few fast steps), read
    from the run's recording: its alerts as they were raised, then how it ended."""
    from accmon.probe.recording import RecordingError, RecordingReader

    viewer = HeadlessViewer([], out=out or sys.stderr, discover=False)
    try:
        for frame in RecordingReader(path).frames():
            viewer.handle(frame, frame.get("rank", 0))
    except (OSError, RecordingError) as exc:
        viewer.say(f"the run ended before it could be watched; its recording cannot be read: {exc}")
        return
    viewer.say(f"run {viewer.end_words()}: {viewer.steps_words('recorded')}{viewer._loss_words()} "
               "(it ended before the viewer attached)")
