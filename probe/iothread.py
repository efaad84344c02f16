"""The probe's one I/O thread: it owns every socket and the recording (as ipykernel's IOPubThread does).

The training thread only appends to the run's inbox (a deque). Here the inbox becomes columnar `steps` frames;
each frame gets the next sequence number, goes through the rules, into the recording, into the log (history for
late joiners) and out on the XPUB socket. An idle loop sleeps in one poll until a viewer asks for something,
the training thread rings the doorbell (anything appended to the inbox), or POLL_MS passes. A tick that found
work is followed by a short nap with the doorbell off, so that a busy training thread's items go out in
batches, as one frame per tick.

The thread's parts: ioframes.py (inbox to frames, and frames out), ioserve.py (the ROUTER's history and control);
inbox.py holds what this thread and the training thread share.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import traceback
import weakref
from typing import Any

import zmq

from . import registry
from .errors import report_once
from .framelog import FrameLog
from .inbox import ALERT, COLUMNS, END, FACTS, ROW, RunSide
from .ioframes import FrameEmitter
from .ioserve import HistoryServer
from .recording import RecordingWriter
from .stop import stop_note_path

# The inbox tags and the stop note's path are imported from here too (the launcher, tui/runner.py): kept importable.
__all__ = ["ALERT", "COLUMNS", "END", "FACTS", "ROW", "IOThread", "stop_note_path"]

# How long the loop sleeps with nothing to do. A wake costs ~0.17 ms of CPU (pyzmq's poll of two sockets), time
# that a training process using every core feels: at 50 ms, an idle probe spent 3.4 ms of CPU a second.
POLL_MS = 250
# After a tick that found work, a nap without the doorbell: a training thread that logs every step fills the
# inbox for one frame per tick instead of ringing for each row (a wake, a GIL hand-off and a frame each).
BUSY_POLL_MS = 50
LINGER_POLL_MS = 50  # at the end of a run, while viewers catch up: the process's exit waits on this loop
HEARTBEAT_S = 1.0
SYSTEM_POLL_S = 1.0
SYNC_S = 1.0  # fdatasync cadence: survive power loss with at most ~1 s lost (design.md)
MAX_REQUEST_BYTES = 4096
# Each peer's ROUTER pipe holds one reply (SNDHWM counts whole multipart messages): ioserve.py starts a reply only
# when the pipe is empty, and bounds the replies not known to be taken in bytes (HISTORY_INFLIGHT_BYTES).
CTL_SNDHWM = 1
CTL_RCVHWM = 64  # queued requests per peer; beyond, ZeroMQ stops reading that peer's socket
# Subscriptions: a viewer subscribes to everything (the empty topic, a 1-byte message). The XPUB keeps every
# topic a peer sends in a trie (issue 16: 92 MB of topics held 3.7 GB; one 50 MB topic 550 MB). One message is
# bounded by MAXMSGSIZE (above the handshake's own commands: CURVE's INITIATE is a few hundred bytes); past
# TOPIC_BYTES_LIMIT of topics in all, the XPUB is made anew, which frees them (viewers re-subscribe by themselves
# and repair the gap from history).
PUB_MAXMSGSIZE = 1024
TOPIC_BYTES_LIMIT = 1024 * 1024
# At the end of a run, connected viewers may still be repairing gaps from the log: wait for them to say they
# have the end frame, as long as they keep asking (each request gives them CLOSE_LINGER_S more: on a loaded
# machine a viewer fetching thousands of frames takes longer than one such span), but never hold the process's
# exit longer than CLOSE_LINGER_MAX_S.
CLOSE_LINGER_S = 3.0
CLOSE_LINGER_MAX_S = 30.0
# PUB drops silently at its high-water mark (design.md: 500k burst → 168k delivered): raise it, and use
# XPUB_NODROP so that a full pipe is an EAGAIN we can count instead of a silent loss.
SNDHWM = 10_000



class IOThread(FrameEmitter, HistoryServer, threading.Thread):
    def __init__(self, run: RunSide) -> None:
        super().__init__(name=f"accmon-io-{run.run_id}", daemon=True)
        self.run_ = run
        self.ready = threading.Event()
        self.stop_requested = threading.Event()
        self.seq = 0
        self.step = -1
        self.dropped_live = 0
        self.log = FrameLog(run.memory_budget)
        self.writer: RecordingWriter | None = None
        # The doorbell: a byte on this pipe ends the loop's poll at once. Both ends stay open as long as this
        # object: a late `wake()` must never write into a file descriptor number that was closed and reused.
        self._bell_r, self._bell_w = os.pipe()
        os.set_blocking(self._bell_r, False)
        os.set_blocking(self._bell_w, False)
        weakref.finalize(self, _close_fds, self._bell_r, self._bell_w)
        self.asleep = False
        self.entry: registry.RunEntry | None = None
        self.diagnoser: Any = None
        self.alerts_sent = 0
        # For `hello` (what `accmon ls` and the picker show): each alert's identity and whether it is active now,
        # at most MAX_ALERT_KEYS of them (alerts are a few dozen ids; a script's own alerts could be many), and
        # how the run ended once its end frame is out.
        self.alert_states: dict[tuple, bool] = {}
        self.end_status: str | None = None
        self.endpoints: tuple[str, str] | None = None
        self.subscribers = 0
        self.viewers_done = 0
        self.pub: zmq.Socket | None = None
        self.security: Any = None  # security.ServerSecurity of a tcp:// bind with CurveZMQ keys
        # Bytes of the last reply to each peer, until it is known to have left its pipe (see HISTORY_INFLIGHT_BYTES).
        self._owed: dict[bytes, int] = {}
        self._owed_swept = 0.0
        self.topic_bytes = 0  # bytes of non-empty topics subscribed since the XPUB was made
        self.pub_renewals = 0
        self.requests_answered = 0
        self.requests_refused = 0  # requests from a peer still holding its last reply, or over the byte bound
        self.stops_refused = 0  # stop requests from viewers not allowed to control the run (_stop_asked)

    # -- set-up -------------------------------------------------------------------------------------------
    def _open_recording(self) -> None:
        path = self.run_.record
        if not path:
            return
        try:
            self.writer = RecordingWriter(path)
            self.log.attach_file(path)
        except OSError as exc:
            self.writer = None
            report_once(f"record-open:{path}", f"cannot record to {path}: {exc.strerror}; training goes on without a recording")

    def _new_pub(self) -> zmq.Socket:
        pub = self.ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, SNDHWM)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription is reported: count viewers
        pub.setsockopt(zmq.MAXMSGSIZE, PUB_MAXMSGSIZE)
        return pub

    def _open_sockets(self) -> tuple[zmq.Socket, zmq.Socket]:
        ctx = self.ctx
        pub = self._new_pub()
        ctl = ctx.socket(zmq.ROUTER)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        ctl.setsockopt(zmq.SNDHWM, CTL_SNDHWM)
        ctl.setsockopt(zmq.RCVHWM, CTL_RCVHWM)
        # A full pipe is EAGAIN and a gone peer EHOSTUNREACH, instead of a silent drop: how _serve knows
        # whether a peer has taken its last reply.
        ctl.setsockopt(zmq.ROUTER_MANDATORY, 1)
        run = self.run_
        if run.bind:
            from .security import configure_server

            self.security = configure_server(pub, ctl, run.bind)  # CURVE + allow-list when keys exist
            pub.bind(run.bind)
            host = run.bind.rsplit(":", 1)[0]
            port = int(run.bind.rsplit(":", 1)[1])
            ctl_ep = f"{host}:{port + 1}" if port else f"{host}:0"
            ctl.bind(ctl_ep)
            pub_ep = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            ctl_ep = ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            pub_path, ctl_path = registry.socket_paths(run.run_id, run.rank)
            pub_ep, ctl_ep = f"ipc://{pub_path}", f"ipc://{ctl_path}"
            pub.bind(pub_ep)
            ctl.bind(ctl_ep)
            for p in (pub_path, ctl_path):
                os.chmod(p, 0o600)
        self.endpoints = (pub_ep, ctl_ep)
        return pub, ctl

    def _register(self) -> None:
        run = self.run_
        assert self.endpoints is not None
        self.entry = registry.RunEntry(
            run_id=run.run_id, rank=run.rank, name=run.name, host=socket.gethostname(), pid=os.getpid(),
            started=run.started, cmd=run.cmd, pub=self.endpoints[0], ctl=self.endpoints[1],
            world_size=run.world_size, extra={"record": os.path.abspath(run.record) if run.record else None,
                                              "curve": self.security.public if self.security else None},
        )
        registry.register(self.entry)

    def _load_rules(self) -> None:
        if not self.run_.rules:
            return
        from .rules import Diagnoser  # here, not at the top: a run with rules=False never pays for importing them

        try:
            self.diagnoser = Diagnoser()
        except Exception as exc:
            report_once("rules-init", f"diagnostic rules disabled: {exc!r}")

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> None:
        self.ctx = zmq.Context()
        pub = ctl = None
        try:
            self._open_recording()
            self._load_rules()
            try:
                pub, ctl = self._open_sockets()
                self._register()
            except Exception as exc:  # no live view, but recording and rules go on
                report_once("sockets", f"live view disabled: {exc}")
                pub = ctl = None
            self.ready.set()
            self._emit("meta", **self.run_.meta())
            self._loop(pub, ctl)
        except Exception:
            report_once("io-thread", "monitoring stopped by an internal error (training goes on):\n" + traceback.format_exc())
        finally:
            self.ready.set()
            self._shutdown(pub, ctl)

    def wake(self) -> None:
        """Ring the doorbell: the loop drains the inbox now instead of at its next timeout. Any thread; never blocks."""
        if self.asleep:
            try:
                os.write(self._bell_w, b"\0")
            except OSError:  # the pipe is full (a wake is pending anyway)
                pass

    def _sleep(self, poller: zmq.Poller, timeout_ms: float, busy: bool) -> dict:
        if busy:
            timeout_ms = min(timeout_ms, BUSY_POLL_MS)
        else:
            # Asleep is said before the inbox is looked at: an item appended after that look finds it set and
            # rings (the GIL orders the two threads' steps), so nothing waits for the timeout unseen.
            self.asleep = True
            if self.run_._inbox:
                timeout_ms = 0
        events = dict(poller.poll(int(timeout_ms)))
        self.asleep = False
        # Emptied in either mode: a ring that raced this thread's waking would otherwise end every busy nap at once.
        if self._bell_r in events:
            try:
                while os.read(self._bell_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return events

    def _loop(self, pub: zmq.Socket | None, ctl: zmq.Socket | None) -> None:
        poller = zmq.Poller()
        poller.register(self._bell_r, zmq.POLLIN)
        if pub is not None and ctl is not None:
            poller.register(ctl, zmq.POLLIN)
            poller.register(pub, zmq.POLLIN)
        self.pub = pub
        last_hb = last_sync = last_system = time.monotonic()
        busy = False
        while True:
            stopping = self.stop_requested.is_set()
            # Wake for the next heartbeat on time: a viewer calls a run stalled after three missed ones.
            # Rounded up: poll() truncates to whole milliseconds, and 0 would spin until the heartbeat is due.
            until_hb = math.ceil((last_hb + HEARTBEAT_S - time.monotonic()) * 1000) if pub is not None else POLL_MS
            events = self._sleep(poller, 0 if stopping else max(0, min(POLL_MS, until_hb)), busy)
            if ctl is not None and ctl in events:
                self._serve(ctl)
            if pub is not None and pub in events:
                self._read_subscriptions(pub)
                if self.topic_bytes > TOPIC_BYTES_LIMIT:
                    poller.unregister(pub)
                    pub = self._renew_pub(pub)
                    poller.register(pub, zmq.POLLIN)
            busy = bool(self.run_._inbox)
            ended = self._drain_inbox()
            self.run_.poll_stop()  # another rank's stop, through the job's store (multi-rank runs only)
            now = time.monotonic()
            if pub is not None and now - last_hb >= HEARTBEAT_S:
                last_hb = now
                self._heartbeat()
            if now - last_system >= SYSTEM_POLL_S:
                last_system = now
                self.run_.system.poll()  # NVML, where installed: off the training thread, about once a second
            if self.writer is not None and now - last_sync >= SYNC_S:
                last_sync = now
                self._guard_disk(self.writer.sync)
            if ended or (stopping and not self.run_._inbox):
                if not ended:
                    self._emit("end", status="finished", error=None, total_steps=self.run_.steps_logged,
                               dropped_steps=self.run_.dropped)
                if pub is not None and ctl is not None:
                    self._linger(pub, ctl)
                return

    def _renew_pub(self, old: zmq.Socket) -> zmq.Socket:
        """The XPUB made anew at the same endpoint: what subscribers made the old one keep is freed."""
        assert self.endpoints is not None
        endpoint = self.endpoints[0]
        monitor = old.get_monitor_socket(zmq.EVENT_CLOSED)
        try:
            old.unbind(endpoint)
            # Wait for the listener to close (an ipc:// one removes its file then): a bind before that would have
            # its new file removed, or find the port still taken.
            if monitor.poll(2000):
                monitor.recv_multipart()
        finally:
            old.disable_monitor()
            monitor.close(0)
            old.close(0)
        pub = self._new_pub()
        if self.security is not None:
            self.security.secure(pub)
        pub.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://"):], 0o600)
        self.pub = pub
        self.topic_bytes = 0
        self.subscribers = 0  # the viewers subscribe again, and are counted again
        self.pub_renewals += 1
        report_once("pub-renewed", "a peer subscribed to more topics than any viewer does; the live socket was "
                    "made anew to free them (viewers reconnect by themselves)")
        return pub

    def _linger(self, pub: zmq.Socket, ctl: zmq.Socket) -> None:
        """Serve viewers still catching up (history, gap repair) until each has the end frame, or time is up;
        under `accmon run`, first wait for its viewer to subscribe."""
        start = time.monotonic()
        deadline = start + CLOSE_LINGER_S
        self._heartbeat()  # tells a viewer that missed the end frame that there is more to fetch
        last_hb = time.monotonic()
        poller = zmq.Poller()
        poller.register(ctl, zmq.POLLIN)
        poller.register(pub, zmq.POLLIN)
        # Under `accmon run` a viewer is on its way: a run over in a blink must not end before it subscribes.
        expected = 1 if os.environ.get(registry.ENV_LAUNCH) else 0
        while time.monotonic() < deadline and (self.viewers_done < self.subscribers or self.subscribers < expected):
            events = dict(poller.poll(LINGER_POLL_MS))
            if ctl in events:
                self._serve(ctl)
                deadline = min(start + CLOSE_LINGER_MAX_S, time.monotonic() + CLOSE_LINGER_S)
            if pub in events:
                self._read_subscriptions(pub)
            if time.monotonic() - last_hb > HEARTBEAT_S / 4:
                last_hb = time.monotonic()
                self._heartbeat()

    def _shutdown(self, pub: zmq.Socket | None, ctl: zmq.Socket | None) -> None:
        if self.entry is not None:
            try:
                registry.unregister(self.entry)
            except OSError:
                pass
        for s in (pub, ctl):
            if s is not None:
                s.close(0)
        if self.security is not None:
            self.security.stop()  # its ZAP sockets would keep ctx.term() waiting
        # destroy, not term: it also closes sockets a failed bind or registration left open, on which term()
        # would wait forever.
        self.ctx.destroy(linger=0)
        if self.writer is not None:
            self._guard_disk(self.writer.close)
            self.writer = None
        self.log.close()
        self.run_.system.stop_polling()  # the descriptor the training thread reads is closed by Run.close

    # -- data path ----------------------------------------------------------------------------------------
    def _read_subscriptions(self, pub: zmq.Socket) -> None:
        while True:
            try:
                msg = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(msg) > 1:  # a topic: accmon's viewers never send one
                self.topic_bytes += len(msg)
                continue
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
