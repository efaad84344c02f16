"""Where the app's frames come from: a live run (one RunClient per rank), a recording, or a test.

Every source does its socket and file work on its own thread; the app drains decoded frames on a timer from
the UI thread, which only pops a deque. `wake` is set when frames are queued (the app may wait on it in tests).
A source that starts over on another run (the training process restarted) bumps `generation`: the app then
starts a fresh store. The live source is a thin adapter: the run itself is a `LiveRun` (tui/live/).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from accmon.probe import registry
from accmon.probe.recording import RecordingReader

from .live import SILENT_GONE_S, LiveRun, SourceStatus, alert_frame, rank_gone  # noqa: F401  (also imported from here)
from .peek import (  # noqa: F401  (the picker's and `accmon ls`'s names, imported from here by the app and cli)
    NOTHING,
    PEEK_TIMEOUT_S,
    PickerEntry,
    RankPeek,
    RunPeek,
    age_words,
    group_runs,
    peek_cells,
    peek_from_dict,
    peek_runs,
    run_peek,
)
from .replay import child_command, read_messages

REPLAY_QUEUE_FRAMES = 64  # frames read ahead of the app: bounded memory, and no CPU spent far ahead of the screen
REPLAY_BATCH = 64
FIRST_SCREEN_WAIT_S = 3.0  # the reader goes on after this even if no app ever says it drew


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
    """A deque of frames with a wake event; appended by one thread, drained by the UI. A restart leaves a boundary
    in it (`mark_restart`): the drain that meets it comes back empty, so a consumer that drains in a loop stops
    there and looks at `generation` before it takes a frame of the new run (the app resets its store then)."""

    def __init__(self) -> None:
        self.q: deque[dict[str, Any] | None] = deque()  # None: a restart's boundary
        self.wake = threading.Event()
        self.lock = threading.Lock()

    def push(self, frames: list[dict[str, Any]]) -> None:
        with self.lock:
            self.q.extend(frames)
        self.wake.set()

    def drain(self, max_frames: int | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            q = self.q
            while q and (max_frames is None or len(out) < max_frames):
                frame = q[0]
                if frame is None:  # a restart: this drain ends here; an empty one takes the boundary away
                    if not out:
                        q.popleft()
                    break
                out.append(frame)
                q.popleft()
            if not q:
                self.wake.clear()
        return out

    def clear(self) -> None:
        with self.lock:
            self.q.clear()

    def mark_restart(self) -> None:
        with self.lock:
            self.q.append(None)
        self.wake.set()


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
        self._q.mark_restart()

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        return self._q.drain(max_frames)

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        self.closed = True


class LiveSource:
    """All ranks of one live run, for the app: a `LiveRun` driven on this source's own thread, its frames queued
    for the app's timer. Finds ranks that register late, records if asked, and re-attaches when the run's
    process is gone and a run of the same name appears again (the job was restarted)."""

    kind = "live"
    thread_name = "accmon-live-source"

    def __init__(self, entries: list[registry.RunEntry], *, record: str | None = None,
                 find_again: Callable[[], list[registry.RunEntry]] | None = None,
                 client_factory: Callable[[registry.RunEntry], Any] | None = None,
                 process: Any = None, discover: bool = True) -> None:
        self.record = record
        self.live = LiveRun(entries, record=record, find_again=find_again if find_again is not None else self._same_name,
                            discover=discover, client_factory=client_factory, process=process)
        self._q = _Queue()
        self.wake = self._q.wake
        self.generation = 0
        self._status = SourceStatus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    @property
    def entries(self) -> list[registry.RunEntry]:
        return self.live.entries

    @property
    def run_id(self) -> str | None:
        return self.live.run_id

    @property
    def name(self) -> str | None:
        return self.live.name

    def _same_name(self) -> list[registry.RunEntry]:
        if not self.live.name:
            return []
        return registry.find_run(self.live.name, here=True)  # another host's sockets are not reachable from here

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
        return self.live.request_stop(reason)

    def stop_replies(self) -> list[dict[str, Any] | None]:
        """Each rank's answer to the last stop request (None: none yet)."""
        return self.live.stop_replies()

    # -- the source's thread -----------------------------------------------------------------------------
    def _entries(self) -> list[registry.RunEntry] | None:
        """The entries to watch, found on the source's thread (RemoteSource connects through ssh here); None:
        nothing to watch, the status says why."""
        return self.live.entries

    def _run(self) -> None:
        live = self.live
        try:
            entries = self._entries()
            if entries is None or self._stop.is_set():
                return
            live.start(entries)
            while not self._stop.is_set():
                received = live.pump()
                for r in received:
                    self._q.push(r.frames)
                generation = live.generation
                live.tick()
                if live.generation != generation:  # the run restarted: what was queued belongs to the old one
                    # Cleared, then the new generation, then the boundary: a consumer takes no frame of the new
                    # run before it has seen `generation` change (it drained them into the old store, then reset).
                    self._q.clear()
                    self.generation = live.generation
                    self._q.mark_restart()
                if live.status != self._status:
                    self._status = live.status
                    self.wake.set()
                if not received and not live.wait(0.05):
                    self._stop.wait(0.1)
        except Exception as exc:  # never take the app down with the receiver
            self._status = replace(self._status, state="gone", message=f"receiver stopped: {exc!r}")
            self.wake.set()
        finally:
            live.close()


class ReplaySource:
    """Frames of a recording, read on a thread, as fast as the app takes them. Today's rules run over the same
    file in a child process (tui/replay.py) on the other core; their alerts stream in as they fire, and
    `final_alerts` holds the whole diagnosis once it is done — a recording made with older rules gets today's
    diagnosis, as `accmon check` gives it, without slowing the replay down."""

    kind = "replay"

    def __init__(self, path: str, *, rerun_rules: bool = True) -> None:
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
        try:
            self._proc = subprocess.Popen(child_command(self.path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert self._proc.stdout is not None
            for msg in read_messages(self._proc.stdout):
                if self._stop.is_set():
                    break
                if isinstance(msg.get("alert"), dict):
                    self._q.push([alert_frame({"run": "", "seq": 0}, msg["alert"])])
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
