"""`LiveRun`: one live run, every rank — the one engine behind the TUI's `LiveSource`, the headless printer
(`HeadlessViewer`) and the remote source (`RemoteSource`, which is a LiveSource on forwarded sockets).

It owns what every live viewer does the same way: one `RunClient` per rank; discovery (ranks that register
late, keyed on (rank, pid), and a run of the same name started again: `generation` + 1); the viewer-side
recording of the bytes received, synced about once a second; the cross-rank rules (`StreamDiagnosis`), whose
alerts come out as alert frames after the frames that raised them; and the merged status of the ranks.

A plain object with no thread of its own: its owner drives it from one thread — `start()`, then `pump()` and
`tick()` in a loop, `close()` at the end. LiveSource does so on its `accmon-live-source` thread (the app only
drains LiveSource's queue); HeadlessViewer on its caller's thread (the main thread of `attach --headless` and
`run --headless`). `request_stop`, `stop_replies` and `status` may be read from another thread (the app's):
`clients` is replaced whole, never changed in place, and `status` is replaced whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from accmon.probe import registry, security, wire
from accmon.probe.recording import RecordingWriter
from accmon.probe.rules import StreamDiagnosis

from ..subscriber import RunClient
from .status import SourceStatus, rank_gone

DISCOVER_S = 0.5  # how often a live run looks for ranks that registered late, or for the run started again
SYNC_S = 1.0  # how often the viewer-side recording is synced to disk


def client_for(entry: registry.RunEntry, *, arrays: bool = True) -> RunClient:
    """A client for one rank. `arrays`: packed columns stay numpy arrays (the app's store takes them as they
    arrive, no Python float per value); the headless printer only counts steps and reads alerts."""
    return RunClient(entry.pub, entry.ctl, curve=security.curve_for(entry.pub, entry.extra), arrays=arrays)


def alert_frame(src: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    """An alert raised on the viewer's side (the cross-rank rules, replay's rules child) as an alert frame, as
    if a probe had sent it: `src` is the frame that raised it."""
    return wire.envelope("alert", src.get("run", ""), alert.get("rank", src.get("rank", 0)) or 0, src.get("seq", 0),
                         alert.get("step", src.get("step", -1)), alert=dict(alert))


@dataclass
class Received:
    """What one rank's client delivered in one `pump()`: its frames, then the cross-rank alerts they raised
    (as alert frames); `count`: the frames received (the alerts not counted)."""

    entry: registry.RunEntry
    frames: list[dict[str, Any]]
    count: int


class LiveRun:
    """All ranks of one live run (see the module's docstring). `find_again`: where to look for the run started
    again once every rank is gone or ended (None: never); `discover`: look for ranks that register late;
    `process`: `accmon run`'s command, to tell "not started yet" from "exited"; `on_event(line)`: what is worth
    telling the user (a rank joined, the recording stopped)."""

    def __init__(self, entries: list[registry.RunEntry], *, record: str | None = None,
                 find_again: Callable[[], list[registry.RunEntry]] | None = None, discover: bool = True,
                 client_factory: Callable[[registry.RunEntry], Any] | None = None, process: Any = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.entries = list(entries)
        self.clients: list[tuple[registry.RunEntry, Any]] = []
        self.name = entries[0].name if entries else None
        self.run_id = entries[0].run_id if entries else None
        self.world_size = max((e.world_size for e in entries), default=1)
        self.record = record
        self.writer: RecordingWriter | None = None
        self.find_again = find_again
        self.discover = discover
        self.process = process
        self.on_event = on_event
        self._factory = client_factory or client_for
        self.generation = 0
        self.diagnosis = StreamDiagnosis(per_rank=False)  # cross-rank alerts: only a viewer of every rank raises them
        self.status = SourceStatus()
        self._last_look = self._last_sync = time.monotonic()

    # -- the owner's loop ------------------------------------------------------------------------------------
    def start(self, entries: list[registry.RunEntry] | None = None) -> LiveRun:
        """Open the recording, then connect to `entries` (default: those given at construction). Raises
        OSError when the recording cannot be created."""
        if self.record:
            self.writer = RecordingWriter(self.record)
        self._attach(self.entries if entries is None else entries)
        return self

    def pump(self) -> list[Received]:
        """What every rank's client has received since the last call: recorded (the very bytes), then diagnosed
        across ranks — every frame, as `accmon check` and replay's rules child feed them."""
        out = []
        for entry, client in self.clients:
            batch = client.drain_with_bytes()
            if not batch:
                continue
            writer = self.writer
            if writer is not None:
                payloads = [p for _, p in batch]
                self._guard(lambda: writer.write(payloads))  # noqa: B023 (called at once)
            frames = [f for f, _ in batch]
            for f in list(frames):
                frames += self.diagnose(f)
            out.append(Received(entry, frames, len(batch)))
        return out

    def diagnose(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """The cross-rank alerts `frame` raised, as alert frames."""
        return [alert_frame(frame, a) for a in self.diagnosis.observe(frame)]

    def tick(self) -> bool:
        """Discovery (every DISCOVER_S), the recording's sync (every SYNC_S) and the merged status. Returns
        whether the status changed."""
        now = time.monotonic()
        if now - self._last_look > DISCOVER_S:
            self._last_look = now
            self.look_around()
        if self.writer is not None and now - self._last_sync > SYNC_S:
            self._last_sync = now
            self._guard(self.writer.sync)
        return self._update_status()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for frames (on the first rank's wake event); False at once when there is no
        client yet (the owner waits its own way)."""
        for _, client in self.clients[:1]:
            client.wake.wait(timeout)
            return True
        return False

    def close(self) -> None:
        for _, client in self.clients:
            client.close()
        if self.writer is not None:
            self._guard(self.writer.close)
            self.writer = None

    # -- what the viewers ask ----------------------------------------------------------------------------------
    def all_gone(self) -> bool:
        return all(rank_gone(e, c) for e, c in self.clients)

    def last_heard(self) -> dict[int, float]:
        """Per rank, the wall time of its last frame or heartbeat, or of its connection closing: a rank killed in a
        collective falls silent before the ranks waiting on it, which keep heartbeating until their launcher stops
        them."""
        out: dict[int, float] = {}
        for entry, client in self.clients:
            if client.heard_at is not None:
                out[entry.rank] = max(out.get(entry.rank, 0.0), client.heard_at)
        return out

    def request_stop(self, reason: str = "") -> int:
        """Ask every rank of the run to stop at its next step (the viewer's stop key); the ranks' answers come in
        `stop_replies()`. Returns how many ranks were asked."""
        clients = [c for _, c in self.clients]
        for c in clients:
            c.request_stop(reason)
        return len(clients)

    def stop_replies(self) -> list[dict[str, Any] | None]:
        """Each rank's answer to the last stop request (None: none yet)."""
        return [getattr(c, "stop_reply", None) for _, c in self.clients]

    # -- inside ------------------------------------------------------------------------------------------------
    def _attach(self, entries: list[registry.RunEntry]) -> None:
        for _, c in self.clients:
            c.close()
        clients = [(e, self._factory(e)) for e in entries]
        for _, c in clients:
            c.start()
        self.clients = clients
        self.entries = list(entries)
        self.run_id = entries[0].run_id if entries else None
        self.world_size = max((e.world_size for e in entries), default=1)
        if self.name is None and entries:  # `accmon run`'s source starts before the run has a name
            self.name = entries[0].name

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except OSError as exc:
            path = self.writer.path if self.writer is not None else self.record
            words = f"recording to {path} stopped: {exc.strerror or exc}; frames so far are kept"
            self.writer = None
            self.status = replace(self.status, message=words)
            self._event(words)

    def _event(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)

    def _over(self) -> bool:
        """Every rank known is gone, or has ended and no rank of the world is still to register."""
        if not self.entries or self.all_gone():
            return True
        ended = all(getattr(c.status, "state", "") in ("ended", "closed") for _, c in self.clients)
        return ended and len(self.entries) >= self.world_size

    def look_around(self) -> None:
        """Ranks that registered late (this host's: another host's sockets are not reachable from here), by
        process, not rank alone: under Lightning's ddp_spawn the launching process registered rank 0 before it
        spawned the real rank 0. Once the run is over: the run started again (`find_again`)."""
        if not self._over():
            if self.discover and self.run_id not in (None, "?"):
                known = {(e.rank, e.pid) for e in self.entries}
                late = [e for e in registry.list_runs(here=True) if e.run_id == self.run_id and (e.rank, e.pid) not in known]
                for e in late:
                    client = self._factory(e)
                    client.start()
                    self.clients = [*self.clients, (e, client)]
                    self.entries.append(e)
                    self.world_size = max(self.world_size, e.world_size)
                    self._event(f"rank {e.rank} joined (pid {e.pid})")
            return
        if self.find_again is None:
            return
        again = [e for e in self.find_again() if e.run_id != self.run_id and e.alive()]
        if again:
            self.diagnosis = StreamDiagnosis(per_rank=False)
            self._attach(again)
            self.generation += 1
            self.status = replace(self.status, message=f"re-attached: the run restarted (pid {again[0].pid})")

    def _update_status(self) -> bool:
        states = [c.status for _, c in self.clients]
        if not states:
            code = self.process.poll() if self.process is not None else None
            if code is not None:
                new = replace(self.status, state="gone",
                              message=f"the command exited (code {code}) without starting the probe")
            else:
                new = replace(self.status, state="connecting", message=self.status.message or "waiting for the run")
        else:
            names = {s.state for s in states}
            if names <= {"ended", "closed"} and "ended" in names:
                state = "ended"
            elif self.entries and self.all_gone():
                state = "gone"
            elif "live" in names:
                state = "stalled" if "stalled" in names else "live"
            elif "stalled" in names:
                state = "stalled"
            else:
                state = "connecting"
            message = next((s.message for s in states if s.message and s.state == "stalled"), None)
            if message is None and self.status.message and self.status.message.startswith(("re-attached", "recording")):
                message = self.status.message
            new = SourceStatus(state=state, dropped_live=sum(s.dropped_live for s in states), message=message,
                               ranks=len(states), dropped_steps=sum(s.dropped_steps for s in states))
        changed = new != self.status
        self.status = new
        return changed
