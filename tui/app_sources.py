"""Where the app's frames come from: a live run (one RunClient per rank), a recording, or a test.

Every source does its socket and file work on its own thread; the app drains decoded frames on a timer from
the UI thread, which only pops a deque. `wake` is set when frames are queued (the app may wait on it in tests).
A source that starts over on another run (the training process restarted) bumps `generation`: the app then
starts a fresh store.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from accmon.probe import registry, wire
from accmon.probe.rules import StreamDiagnosis

DISCOVER_S = 1.0  # how often a live source looks for ranks that registered late, or a restarted run
REPLAY_QUEUE_FRAMES = 64  # frames read ahead of the app: bounded memory, and no CPU spent far ahead of the screen
REPLAY_BATCH = 64
FIRST_SCREEN_WAIT_S = 3.0  # the reader goes on after this even if no app ever says it drew
# A run attached by its endpoint (`accmon attach ipc://…/X.pub`, tcp://HOST:PORT) names no process: it is taken
# as gone when, once heard, it has sent no frame or heartbeat for this long (the probe heartbeats every second;
# the header says "stalled" after 3 s). A killed process's connection closes at its death, which counts as its
# last word (RunClient.heard_at).
SILENT_GONE_S = 10.0


def rank_gone(entry: registry.RunEntry, client: Any) -> bool:
    """Whether `entry`'s rank is gone without its end frame. An entry from the registry: its process is gone.
    An entry made for an endpoint (pid 0: no process known) is judged by its connection alone — never heard
    yet is waiting, not gone; heard, then silent for SILENT_GONE_S, is gone. An entry forwarded over ssh
    (remote.py) is never judged here: its pid is the remote host's, its sockets are local forwards, and the remote
    side says when the run is gone (RemoteRun.gone) — after a reconnect that may take longer than any silence."""
    if entry.extra.get("remote") is not None:
        return False
    if entry.pid > 0:
        return not entry.alive()
    heard = getattr(client, "heard_at", None)
    return heard is not None and time.time() - heard > SILENT_GONE_S


@dataclass(frozen=True)
class SourceStatus:
    """The source's side of the header: connection state, drops, what the file or socket said."""

    state: str = "connecting"  # connecting | live | stalled | ended | gone | replay
    dropped_live: int = 0
    dropped_steps: int = 0  # live: steps the probe's queue dropped, lost for good (RunStore.live_dropped)
    message: str | None = None
    loaded: bool = False  # replay: the whole file has been read
    truncated: bool = False  # replay: the file ends in a partial frame or without an end frame
    problems: tuple[str, ...] = ()
    ranks: int = 1
    rules: str = ""  # replay: "" (recorded alerts only), "running", "done" (final_alerts set), "failed"


class Source(Protocol):
    kind: str  # "live" | "replay"
    wake: threading.Event
    generation: int

    def start(self) -> None: ...

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]: ...

    @property
    def status(self) -> SourceStatus: ...

    def close(self) -> None: ...


class _Queue:
    """A deque of frames with a wake event; appended by one thread, drained by the UI."""

    def __init__(self) -> None:
        self.q: deque[dict[str, Any]] = deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()

    def push(self, frames: list[dict[str, Any]]) -> None:
        with self.lock:
            self.q.extend(frames)
        self.wake.set()

    def drain(self, max_frames: int | None) -> list[dict[str, Any]]:
        with self.lock:
            if max_frames is None or max_frames >= len(self.q):
                out = list(self.q)
                self.q.clear()
            else:
                out = [self.q.popleft() for _ in range(max_frames)]
            if not self.q:
                self.wake.clear()
        return out

    def clear(self) -> None:
        with self.lock:
            self.q.clear()


class QueueSource:
    """A source driven by hand: tests (and embedders) push frames and set the state the header shows."""

    def __init__(self, kind: str = "live", state: str = "live") -> None:
        self.kind = kind
        self._q = _Queue()
        self.wake = self._q.wake
        self.generation = 0
        self._status = SourceStatus(state=state)
        self.closed = False

    def start(self) -> None:
        pass

    def push(self, *frames: dict[str, Any]) -> None:
        self._q.push(list(frames))

    def set_status(self, **changes: Any) -> None:
        self._status = replace(self._status, **changes)
        self.wake.set()

    def restart(self) -> None:
        """The run's process restarted: what follows is a new run."""
        self._q.clear()
        self.generation += 1

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        return self._q.drain(max_frames)

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        self.closed = True


class LiveSource:
    """All ranks of one live run. Finds ranks that register late, records if asked, and re-attaches when the run's
    process is gone and a run of the same name appears again (the job was restarted)."""

    kind = "live"

    def __init__(self, entries: list[registry.RunEntry], *, record: str | None = None,
                 find_again: Callable[[], list[registry.RunEntry]] | None = None,
                 client_factory: Callable[[registry.RunEntry], Any] | None = None,
                 process: Any = None) -> None:
        self.entries = list(entries)
        self.process = process  # `accmon run`: the command's Popen, to tell "not started yet" from "exited"
        self.record = record
        self.name = entries[0].name if entries else None
        self.run_id = entries[0].run_id if entries else None
        self.find_again = find_again if find_again is not None else self._same_name
        self._factory = client_factory or _client_for
        self._q = _Queue()
        self.wake = self._q.wake
        self.generation = 0
        self._clients: list[tuple[registry.RunEntry, Any]] = []
        self._status = SourceStatus()
        self._stop = threading.Event()
        self._writer: Any = None
        self._rank_rules = StreamDiagnosis(per_rank=False)  # cross-rank alerts: only a viewer of every rank raises them
        self._thread = threading.Thread(target=self._run, name="accmon-live-source", daemon=True)

    def _same_name(self) -> list[registry.RunEntry]:
        if not self.name:
            return []
        return registry.find_run(self.name, here=True)  # another host's sockets are not reachable from here

    def start(self) -> None:
        self._thread.start()

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        return self._q.drain(max_frames)

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(3.0)

    def request_stop(self, reason: str = "") -> int:
        """Ask every rank of the run to stop at its next step (the viewer's stop key); the ranks' answers come in
        `stop_replies()`. Returns how many ranks were asked."""
        clients = [c for _, c in self._clients]  # replaced whole by the source's thread, never changed in place
        for c in clients:
            c.request_stop(reason)
        return len(clients)

    def stop_replies(self) -> list[dict[str, Any] | None]:
        """Each rank's answer to the last stop request (None: none yet)."""
        return [getattr(c, "stop_reply", None) for _, c in self._clients]

    # -- the source's thread -----------------------------------------------------------------------------
    def _attach(self, entries: list[registry.RunEntry]) -> None:
        for _, c in self._clients:
            c.close()
        self._clients = [(e, self._factory(e)) for e in entries]
        for _, c in self._clients:
            c.start()
        self.entries = list(entries)
        self.run_id = entries[0].run_id if entries else None

    def _run(self) -> None:
        try:
            self._attach(self.entries)
            if self.record:
                from accmon.probe.recording import RecordingWriter

                self._writer = RecordingWriter(self.record)
            last_look = last_sync = time.monotonic()
            while not self._stop.is_set():
                got = self._pump()
                now = time.monotonic()
                if now - last_look > DISCOVER_S:
                    last_look = now
                    self._look_around()
                if self._writer is not None and now - last_sync > 1.0:
                    last_sync = now
                    self._guard(self._writer.sync)
                self._update_status()
                if not got:
                    for _, c in self._clients[:1]:
                        c.wake.wait(0.05)
                    if not self._clients:
                        self._stop.wait(0.1)
        except Exception as exc:  # never take the app down with the receiver
            self._status = replace(self._status, state="gone", message=f"receiver stopped: {exc!r}")
            self.wake.set()
        finally:
            for _, c in self._clients:
                c.close()
            if self._writer is not None:
                self._guard(self._writer.close)

    def _pump(self) -> int:
        n = 0
        for _, c in self._clients:
            batch = c.drain_with_bytes()
            if not batch:
                continue
            n += len(batch)
            if self._writer is not None:
                self._guard(lambda: self._writer.write([p for _, p in batch]))  # noqa: B023 (called at once)
            frames = [f for f, _ in batch]
            for f in list(frames):  # every frame, as the headless viewer and `accmon check` feed them
                frames += [_alert_frame(f, a) for a in self._rank_rules.observe(f)]
            self._q.push(frames)
        return n

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except OSError as exc:
            self._status = replace(self._status, message=f"recording stopped: {exc.strerror or exc}")
            self._writer = None

    def _look_around(self) -> None:
        # By process, not rank alone: under Lightning's ddp_spawn the launching process registered rank 0
        # before it spawned the real rank 0.
        known = {(e.rank, e.pid) for e in self.entries}
        gone = self._all_gone() if self.entries else True
        ended = all(getattr(c.status, "state", "") in ("ended", "closed") for _, c in self._clients) and self._clients
        if not (gone or ended):
            if self.run_id not in (None, "?"):
                for e in registry.list_runs(here=True):  # another host's sockets are not reachable from here
                    if e.run_id == self.run_id and (e.rank, e.pid) not in known:
                        self.entries.append(e)
                        client = self._factory(e)
                        client.start()
                        self._clients.append((e, client))
            return
        again = [e for e in self.find_again() if e.run_id != self.run_id and e.alive()]
        if again:
            self._rank_rules = StreamDiagnosis(per_rank=False)
            self._attach(again)
            self._q.clear()
            self.generation += 1
            self._status = replace(self._status, message=f"re-attached: the run restarted (pid {again[0].pid})")
            self.wake.set()

    def _all_gone(self) -> bool:
        return all(rank_gone(e, c) for e, c in self._clients)

    def _update_status(self) -> None:
        states = [c.status for _, c in self._clients]
        if not states:
            code = self.process.poll() if self.process is not None else None
            if code is not None:
                new = replace(self._status, state="gone",
                              message=f"the command exited (code {code}) without starting the probe")
            else:
                new = replace(self._status, state="connecting", message=self._status.message or "waiting for the run")
        else:
            names = {s.state for s in states}
            if names <= {"ended", "closed"} and "ended" in names:
                state = "ended"
            elif self.entries and self._all_gone():
                state = "gone"
            elif "live" in names:
                state = "stalled" if "stalled" in names else "live"
            elif "stalled" in names:
                state = "stalled"
            else:
                state = "connecting"
            message = next((s.message for s in states if s.message and s.state == "stalled"), None)
            if message is None and self._status.message and self._status.message.startswith(("re-attached", "recording")):
                message = self._status.message
            new = SourceStatus(state=state, dropped_live=sum(s.dropped_live for s in states), message=message,
                               ranks=len(states), dropped_steps=sum(s.dropped_steps for s in states))
        if new != self._status:
            self._status = new
            self.wake.set()


def _client_for(entry: registry.RunEntry) -> Any:
    from accmon.probe import security

    from .subscriber import RunClient

    # arrays: the app's store takes packed columns as they arrive (np.frombuffer), no Python float per value.
    return RunClient(entry.pub, entry.ctl, curve=security.curve_for(entry.pub, entry.extra), arrays=True)


class ReplaySource:
    """Frames of a recording, read on a thread, as fast as the app takes them. Today's rules run over the same
    file in a child process (tui/replay.py) on the other core; their alerts stream in as they fire, and
    `final_alerts` holds the whole diagnosis once it is done — a recording made with older rules gets today's
    diagnosis, as `accmon check` gives it, without slowing the replay down."""

    kind = "replay"

    def __init__(self, path: str, *, rerun_rules: bool = True) -> None:
        from accmon.probe.recording import RecordingReader

        self.path = path
        self.reader = RecordingReader(path)  # raises RecordingError for what is not a recording at all
        self.rerun_rules = rerun_rules
        self._q = _Queue()
        self.wake = self._q.wake
        self.generation = 0
        self.final_alerts: list[dict[str, Any]] | None = None
        self._status = SourceStatus(state="replay", message="reading…", rules="running" if rerun_rules else "")
        self._stop = threading.Event()
        # Set by the app once its first screen with data is drawn; the reader waits for it after the first
        # frames, so the file's decoding does not compete with the app's start-up for the same core.
        self.first_drawn = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="accmon-replay-reader", daemon=True)
        self._rules_thread = threading.Thread(target=self._rules, name="accmon-replay-rules", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self.rerun_rules:
            self._rules_thread.start()

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        return self._q.drain(max_frames)

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        for t in (self._thread, self._rules_thread):
            if t.is_alive():
                t.join(3.0)

    def _set(self, **changes: Any) -> None:
        self._status = replace(self._status, **changes)
        self.wake.set()

    def _run(self) -> None:
        batch: list[dict[str, Any]] = []
        size = 4  # the first few frames at once: the first screen needs only them
        try:
            for frame in self.reader.frames(arrays=True):
                if self._stop.is_set():
                    return
                batch.append(frame)
                if len(batch) >= size:
                    self._push(batch)
                    if size != REPLAY_BATCH:
                        self.first_drawn.wait(FIRST_SCREEN_WAIT_S)
                    batch, size = [], REPLAY_BATCH
            self._push(batch)
            problems = tuple(str(p) for p in self.reader.problems)
            self._set(loaded=True, truncated=self.reader.truncated, problems=problems, message=None)
        except Exception as exc:  # an unreadable tail: keep what was read, say why
            self._push(batch)
            self._set(loaded=True, truncated=True, message=f"stopped reading: {exc}")

    def _push(self, batch: list[dict[str, Any]]) -> None:
        while len(self._q.q) > REPLAY_QUEUE_FRAMES and not self._stop.is_set():
            time.sleep(0.005)  # the app is behind: wait rather than hold the whole file in frames
        if batch:
            self._q.push(batch)

    def _rules(self) -> None:
        import msgpack

        try:
            from accmon.tui.replay import child_command

            self._proc = subprocess.Popen(child_command(self.path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=wire.MAX_FRAME_BYTES)
            assert self._proc.stdout is not None
            while not self._stop.is_set():
                chunk = self._proc.stdout.read1(65536)  # type: ignore[attr-defined]  # a BufferedReader
                if not chunk:
                    break
                unpacker.feed(chunk)
                for msg in unpacker:
                    if not isinstance(msg, dict):
                        continue
                    if isinstance(msg.get("alert"), dict):
                        self._q.push([_alert_frame({"run": "", "seq": 0}, msg["alert"])])
                    elif isinstance(msg.get("final"), list):
                        self.final_alerts = [a for a in msg["final"] if isinstance(a, dict)]
                        self._set(rules="done")
                    elif msg.get("error"):
                        self._set(rules="failed", message=f"rules could not run: {msg['error']}")
            self._proc.wait(5)
            if self._status.rules == "running" and not self._stop.is_set():
                self._set(rules="failed", message="the rules stopped before the end of the file")
        except Exception as exc:  # no child process here: the recorded alerts stay
            self._set(rules="failed", message=f"rules could not run: {exc}")


def _alert_frame(src: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    return wire.envelope("alert", src.get("run", ""), alert.get("rank", src.get("rank", 0)) or 0, src.get("seq", 0),
                         alert.get("step", src.get("step", -1)), alert=dict(alert))


@dataclass
class PickerEntry:
    """One run in the picker: its ranks' registry entries."""

    run_id: str
    entries: list[registry.RunEntry] = field(default_factory=list)


def group_runs(entries: list[registry.RunEntry]) -> list[PickerEntry]:
    runs: dict[str, PickerEntry] = {}
    for e in entries:
        runs.setdefault(e.run_id, PickerEntry(e.run_id)).entries.append(e)
    for r in runs.values():
        r.entries.sort(key=lambda e: e.rank)
    return list(runs.values())


# -- what `accmon ls` and the picker show of each run: one `hello` to every rank at once ---------------------
PEEK_TIMEOUT_S = 0.5  # a rank that does not answer within this shows "—": ls and the picker never wait longer
PEEK_MAX_RANKS = 256  # ranks asked at once (a registry listing thousands would open as many sockets)
PEEK_REPLY_BYTES = 1024 * 1024  # a hello is a few hundred bytes (its command line included)
PEEK_STATUSES = ("running", "finished", "crashed")


@dataclass(frozen=True)
class RankPeek:
    """What one rank said to `hello`: its newest step, whether it still runs, how many alerts it raised."""

    step: int | None = None
    status: str | None = None  # running, finished or crashed (ending: the probe lingers a moment after its end)
    alerts: int | None = None  # distinct alerts (id and cause) raised, cleared ones included
    active: int | None = None  # of those, the ones not cleared


def _peek_key(e: registry.RunEntry) -> tuple[str, int, int]:
    return (e.run_id, e.rank, e.pid)


def _count(reply: dict[str, Any], key: str) -> int | None:
    v = reply.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None


def _step(reply: dict[str, Any]) -> int | None:
    v = reply.get("step")
    return -1 if v == -1 and not isinstance(v, bool) else _count(reply, "step")  # -1: no step yet


def peek_runs(entries: list[registry.RunEntry], *, timeout: float = PEEK_TIMEOUT_S) -> dict[tuple[str, int, int], RankPeek]:
    """Ask every rank reachable from here for its `hello` (step, status, alerts), all at once on one poller, and
    wait at most `timeout` in all. Ranks that do not answer, answer nonsense, or are not reachable here (another
    host's, or past PEEK_MAX_RANKS) are missing from the result. Never raises for what a peer does."""
    import msgpack
    import zmq

    from accmon.probe import security

    out: dict[tuple[str, int, int], RankPeek] = {}
    asked = [e for e in entries if e.ctl.startswith(("ipc://", "tcp://")) and registry.is_here(e)][:PEEK_MAX_RANKS]
    if not asked:
        return out
    ctx = zmq.Context()
    socks: dict[zmq.Socket, registry.RunEntry] = {}
    waiting: set[zmq.Socket] = set()
    try:
        poller = zmq.Poller()
        request = msgpack.packb({"op": "hello"})
        for e in asked:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, PEEK_REPLY_BYTES)
            curve = security.curve_for(e.pub, e.extra)
            if curve:
                s.curve_secretkey, s.curve_publickey, s.curve_serverkey = curve["secret"], curve["public"], curve["server"]
            socks[s] = e
            try:
                s.connect(e.ctl)
                s.send(request, zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            poller.register(s, zmq.POLLIN)
            waiting.add(s)
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(max(1, int(left * 1000))):
                try:
                    body = s.recv_multipart(zmq.NOBLOCK)[-1]
                    reply = msgpack.unpackb(body, raw=False, strict_map_key=True)  # its size: MAXMSGSIZE
                except (zmq.ZMQError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                    continue
                if not isinstance(reply, dict) or reply.get("op") != "hello":
                    continue  # busy, a ping: the rank is alive but said nothing; it shows "—"
                status = reply.get("status")
                out[_peek_key(socks[s])] = RankPeek(
                    step=_step(reply), status=status if status in PEEK_STATUSES else None,
                    alerts=_count(reply, "alerts"), active=_count(reply, "alerts_active"))
                poller.unregister(s)
                waiting.discard(s)
    finally:
        for s in socks:
            s.close(0)
        ctx.destroy(linger=0)
    return out


def peek_from_dict(d: Any) -> RankPeek | None:
    """A RankPeek from `accmon ls --json --peek` of another host (the `peek` of each entry): validated as a hello."""
    if not isinstance(d, dict):
        return None
    status = d.get("status")
    return RankPeek(step=_step(d), status=status if status in PEEK_STATUSES else None,
                    alerts=_count(d, "alerts"), active=_count(d, "active"))


@dataclass(frozen=True)
class RunPeek:
    """A whole run as `accmon ls` and the picker show it: its ranks' answers put together (None: none answered)."""

    step: int | None = None
    status: str | None = None
    alerts: int | None = None
    active: int | None = None


def run_peek(entries: list[registry.RunEntry], peeks: dict[tuple[str, int, int], RankPeek]) -> RunPeek:
    """The run's newest step (the furthest rank), its status (crashed if a rank crashed, running while one runs),
    and its alerts over the ranks that answered."""
    answers = [p for p in (peeks.get(_peek_key(e)) for e in entries) if p is not None]
    if not answers:
        return RunPeek()
    steps = [p.step for p in answers if p.step is not None]
    statuses = {p.status for p in answers}
    status = next((s for s in ("crashed", "running", "finished") if s in statuses), None)
    alerts = [p.alerts for p in answers if p.alerts is not None]
    active = [p.active for p in answers if p.active is not None]
    return RunPeek(step=max(steps) if steps else None, status=status, alerts=sum(alerts) if alerts else None,
                   active=sum(active) if active else None)


NOTHING = "—"


def peek_cells(peek: RunPeek | RankPeek | None) -> tuple[str, str, str]:
    """(step, status, alerts) as ls and the picker print them: "—" for what the run did not say. Alerts: '3' or
    '3 (1 active)' when some were cleared."""
    if peek is None:
        return NOTHING, NOTHING, NOTHING
    step = NOTHING if peek.step is None else f"{peek.step:,}" if peek.step >= 0 else "none"  # -1: no step yet
    alerts = NOTHING if peek.alerts is None else str(peek.alerts)
    if peek.alerts and peek.active is not None and peek.active != peek.alerts:
        alerts += f" ({peek.active} active)"
    return step, peek.status or NOTHING, alerts


def age_words(seconds: float | None) -> str:
    """A run's age for ls and the picker: '42s', '7m', '1h05m', '2d03h'."""
    if seconds is None or not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0 or seconds > 1e10:
        return NOTHING
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
