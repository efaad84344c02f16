"""The probe's one I/O thread: it owns every socket and the recording (as ipykernel's IOPubThread does).

The training thread only appends to the run's inbox (a deque). Here the inbox becomes columnar `steps` frames;
each frame gets the next sequence number, goes through the rules, into the recording, into the log (history for
late joiners) and out on the XPUB socket. An idle loop sleeps in one poll until a viewer asks for something,
the training thread rings the doorbell (anything appended to the inbox), or POLL_MS passes. A tick that found
work is followed by a short nap with the doorbell off, so that a busy training thread's items go out in
batches, as one frame per tick.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from . import registry, wire
from .errors import report_once, say
from .framelog import FrameLog
from .recording import RecordingWriter
from .stop import alert_stop

if TYPE_CHECKING:
    from .run import Run

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
MAX_STEPS_PER_FRAME = 2048
HISTORY_MAX_FRAMES = 1000
HISTORY_MAX_BYTES = 8 * 1024 * 1024
MAX_REQUESTS_PER_TICK = 64  # a flood of requests must not starve the data path
MAX_REQUEST_BYTES = 4096
# What replies a peer that asks and never reads can make the training process hold (issue 16: 8 such sockets
# grew it to 13 GB, each ROUTER pipe queueing up to 1,000 replies of 8 MiB). Each peer's pipe holds one reply
# (SNDHWM counts whole multipart messages), and a reply is only started when that pipe is empty: the peer took
# the last one. Across peers, replies not known to be taken are bounded in bytes; past the bound, a request
# gets a small "busy" answer and the viewer asks again.
CTL_SNDHWM = 1
CTL_RCVHWM = 64  # queued requests per peer; beyond, ZeroMQ stops reading that peer's socket
HISTORY_INFLIGHT_BYTES = 24 * 1024 * 1024
OWED_SWEEP_S = 1.0  # how often, at most, peers owing a reply are checked for having taken it or gone
# Subscriptions: a viewer subscribes to everything (the empty topic, a 1-byte message). The XPUB keeps every
# topic a peer sends in a trie (issue 16: 92 MB of topics held 3.7 GB; one 50 MB topic 550 MB). One message is
# bounded by MAXMSGSIZE (above the handshake's own commands: CURVE's INITIATE is a few hundred bytes); past
# TOPIC_BYTES_LIMIT of topics in all, the XPUB is made anew, which frees them (viewers re-subscribe by themselves
# and repair the gap from history).
PUB_MAXMSGSIZE = 1024
TOPIC_BYTES_LIMIT = 1024 * 1024
_PING = msgpack.packb({"op": "ping"})
_BUSY = msgpack.packb({"op": "busy"})
# At the end of a run, connected viewers may still be repairing gaps from the log: wait for them to say they
# have the end frame, as long as they keep asking (each request gives them CLOSE_LINGER_S more: on a loaded
# machine a viewer fetching thousands of frames takes longer than one such span), but never hold the process's
# exit longer than CLOSE_LINGER_MAX_S.
CLOSE_LINGER_S = 3.0
CLOSE_LINGER_MAX_S = 30.0
# PUB drops silently at its high-water mark (design.md: 500k burst → 168k delivered): raise it, and use
# XPUB_NODROP so that a full pipe is an EAGAIN we can count instead of a silent loss.
SNDHWM = 10_000

# Inbox item tags (the first element of each tuple the training thread appends).
ROW, COLUMNS, FACTS, ALERT, END = range(5)
MAX_ALERT_KEYS = 1024


class IOThread(threading.Thread):
    def __init__(self, run: Run) -> None:
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
        self.run_.system.close()

    # -- data path ----------------------------------------------------------------------------------------
    def _drain_inbox(self) -> bool:
        """Turn everything the training thread queued into frames; True when the run's end was queued."""
        inbox = self.run_._inbox
        rows: list[tuple[int, float, dict]] = []
        ended = False
        while inbox:
            item = inbox.popleft()
            tag = item[0]
            if tag == ROW:
                rows.append(item[1:])
                if len(rows) >= MAX_STEPS_PER_FRAME:
                    self._emit_rows(rows)
                    rows = []
                continue
            if rows:
                self._emit_rows(rows)
                rows = []
            if tag == COLUMNS:
                self._emit_columns(*item[1:])
            elif tag == FACTS:
                self._emit("facts", facts=item[1])
            elif tag == ALERT:
                self._emit("alert", alert=item[1])
            elif tag == END:
                # (END, status, error[, stopped]): `stopped` says who stopped a run that was not a crash (the
                # user's Ctrl-C), at the newest step sent.
                stopped = item[3] if len(item) > 3 and isinstance(item[3], dict) else None
                # A stop the training honoured says the step it stopped after (Run.honour_stop).
                extra: dict[str, Any] = {"stopped": {"step": self.step, **stopped}} if stopped else {}
                if self.stops_refused:
                    extra["stop_refused"] = self.stops_refused  # viewers' stop requests refused (_stop_asked)
                self._emit("end", status=item[1], error=item[2], total_steps=self.run_.steps_logged,
                           dropped_steps=self.run_.dropped, **extra)
                if stopped and item[1] == "finished" and stopped.get("by") == "alert":
                    self._tell_launcher(extra["stopped"])
                ended = True
        if rows:
            self._emit_rows(rows)
        return ended

    def _tell_launcher(self, stopped: dict[str, Any]) -> None:
        """Under `accmon run`: leave it a note that --stop-on stopped this rank, for its exit code. The launcher
        reads it after the command ends, whatever the script did after stopping (saved and exited 0, or not)."""
        path = stop_note_path(os.environ.get(registry.ENV_LAUNCH, ""), self.run_.rank)
        if path is None:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(wire_json(stopped))
        except OSError as exc:
            report_once("stop-note", f"cannot tell `accmon run` that the run was stopped ({exc.strerror}); its exit "
                        "code will be the command's")

    def _emit_rows(self, rows: list[tuple[int, float, dict]]) -> None:
        # Rows of one step logged by several calls (log(loss=..), then log(acc=..)) merge into one.
        steps: list[int] = []
        times: list[float] = []
        dicts: list[dict] = []
        for step, t, scalars in rows:
            if steps and steps[-1] == step:
                dicts[-1] = {**dicts[-1], **scalars}
                continue
            steps.append(step)
            times.append(t)
            dicts.append(scalars)
        keys: dict[str, None] = {}
        for d in dicts:
            keys.update(dict.fromkeys(d))
        cols = {k: [d.get(k) for d in dicts] for k in keys}
        self._emit_columns(steps, cols, None, times)

    def _emit_columns(self, steps: list[int], cols: dict[str, list], hists: dict | None, times: list[float] | None) -> None:
        if not steps:
            return
        body: dict[str, Any] = {"steps": steps, "times": times if times is not None else [time.time()] * len(steps), "cols": cols}
        if hists:
            body["hists"] = hists
        self.step = max(self.step, steps[-1])
        self._emit("steps", **body)

    def _emit(self, kind: str, **body: Any) -> None:
        self.seq += 1
        frame = wire.envelope(kind, self.run_.run_id, self.run_.rank, self.seq, self.step, **body)
        # Steps frames go out packed (float columns as raw float64: a viewer reads them without a Python float
        # per value); the rules here read the same frame as lists.
        try:
            payload = wire.encode(wire.pack_steps(frame) if kind == "steps" else frame)
        except (TypeError, ValueError, OverflowError, struct.error):
            frame = _sanitized(frame)
            payload = wire.encode(frame)  # unpacked: what could not be packed goes as plain numbers
        offset = None
        if self.writer is not None:
            try:
                offset = self.writer.write([payload])[0]
            except OSError as exc:
                self._recording_failed(exc)
        self.log.append(self.seq, payload, offset)
        self._publish(payload)
        if kind == "alert":
            self._note_alert(body.get("alert"))
        elif kind == "end":
            self.end_status = str(body.get("status"))
        if self.diagnoser is not None and kind != "alert":
            self._diagnose(frame)

    def _note_alert(self, alert: Any) -> None:
        stop_on = self.run_.stop_on
        if stop_on is not None and self.run_.stop_request is None and stop_on.matches(alert):
            stop = alert_stop(alert)
            self.run_.request_stop(stop)
            say(f"stopping the run at the next step (--stop-on {stop_on}): {stop['reason']}")
        if isinstance(alert, dict):
            key = (str(alert.get("id")), str(alert.get("cause", "")))
            if key in self.alert_states or len(self.alert_states) < MAX_ALERT_KEYS:
                self.alert_states[key] = alert.get("state") != "cleared"

    def _diagnose(self, frame: dict) -> None:
        try:
            changed = self.diagnoser.observe(frame)
        except Exception as exc:
            self.diagnoser = None
            report_once("rules", f"diagnostic rules disabled after an internal error: {exc!r}")
            return
        for alert in changed:
            self.alerts_sent += 1
            self._emit("alert", alert=alert)

    def _recording_failed(self, exc: OSError) -> None:
        assert self.writer is not None
        path = self.writer.path
        kept = self.writer.bytes_written
        try:
            os.close(self.writer.fd)
        except OSError:
            pass
        self.writer = None
        say(
            f"recording to {path} stopped at step {self.step}: {exc.strerror or exc}. "
            f"Training goes on; the {kept} bytes recorded so far are kept and readable."
        )

    def _guard_disk(self, fn: Any) -> None:
        try:
            fn()
        except OSError as exc:
            if self.writer is not None:
                self._recording_failed(exc)

    def _publish(self, payload: bytes) -> None:
        pub = getattr(self, "pub", None)
        if pub is None:
            return
        try:
            pub.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped_live += 1  # the viewer repairs the gap from history
        except zmq.ZMQError as exc:
            report_once("publish", f"live publishing failed: {exc}")

    def _heartbeat(self) -> None:
        hb = wire.envelope("hb", self.run_.run_id, self.run_.rank, self.seq, self.step, dropped=self.dropped_live,
                           dropped_steps=self.run_.dropped)
        if self.pub is None:
            return
        try:
            self.pub.send(wire.encode(hb), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

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

    # -- history and control (ROUTER) -----------------------------------------------------------------------
    def _serve(self, ctl: zmq.Socket) -> None:
        for _ in range(MAX_REQUESTS_PER_TICK):
            try:
                # Frames, not bytes: a `stop` request's last frame carries the peer's ZAP User-Id (its CURVE key).
                frames = ctl.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            ident, body = frames[0].bytes, frames[-1].bytes
            owed_elsewhere = sum(self._owed.values()) - self._owed.get(ident, 0)
            if owed_elsewhere >= HISTORY_INFLIGHT_BYTES:
                self._sweep_owed(ctl)
                owed_elsewhere = sum(self._owed.values()) - self._owed.get(ident, 0)
            # Start the reply only if the peer's pipe is empty: the identity part is refused (EAGAIN) while the
            # last reply still waits there, and (EHOSTUNREACH) when the peer is gone. Nothing is built for it.
            try:
                ctl.send(ident, zmq.SNDMORE | zmq.NOBLOCK)
            except zmq.ZMQError:
                self.requests_refused += 1
                continue
            self._owed.pop(ident, None)
            if owed_elsewhere >= HISTORY_INFLIGHT_BYTES:
                self.requests_refused += 1
                reply = [_BUSY]
            else:
                try:
                    reply = self._answer(body, frames[-1])
                except Exception as exc:  # a malformed request gets an error reply, never a crash
                    reply = [wire.encode({"op": "error", "message": f"bad request: {exc}"[:200]})]
            # The rest of a message whose first part was taken is always taken (a message is queued whole).
            try:
                ctl.send_multipart(reply, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self.requests_answered += 1
            size = sum(len(p) for p in reply)
            if size > 4096:
                self._owed[ident] = size

    def _stop_asked(self, req: dict[str, Any], frame: Any) -> dict[str, Any]:
        """A viewer asks the run to stop (its stop key): done as --stop-on does, by "viewer", if the viewer is the
        run's own user. Over ipc:// it is (the socket is 0600 in a 0700 directory; an ssh viewer comes through it
        as this user); over tcp:// only a CURVE viewer whose key is allowed with control. Others are refused and
        counted (`stop_refused` in hello and in the end frame)."""
        why = self._may_not_control(frame)
        if why is not None:
            self.stops_refused += 1
            if self.stops_refused == 1:
                say(f"refused a viewer's request to stop this run: {why}")
            return {"op": "stop", "ok": False, "why": why, "refused": self.stops_refused}
        reason = req.get("reason")
        reason = reason[:200] if isinstance(reason, str) and reason.strip() else "asked from the viewer"
        run = self.run_
        if run.stop_request is None:
            run.request_stop({"by": "viewer", "reason": reason})
            say(f"stopping the run at the next step: {reason}")
        return {"op": "stop", "ok": True, "step": self.step, "by": str(run.stop_request.get("by")) if run.stop_request else "viewer"}

    def _may_not_control(self, frame: Any) -> str | None:
        """None when the peer of `frame` may stop the run, else why not."""
        if not self.run_.bind:
            return None  # ipc:// only: this user's own
        if self.security is None:
            return "this run's tcp:// bind has no CurveZMQ keys, so no viewer can be told to be its user"
        try:
            user = frame.get("User-Id") if frame is not None else None
        except (zmq.ZMQError, AttributeError):
            user = None
        if self.security.may_control(user):
            return None
        return "this viewer's key is not allowed to control the run (`accmon keys --allow KEY --control` allows it)"

    def _sweep_owed(self, ctl: zmq.Socket) -> None:
        """Forget the replies that peers took, or that ZeroMQ freed with a peer that left (at most once a second)."""
        now = time.monotonic()
        if now - self._owed_swept < OWED_SWEEP_S:
            return
        self._owed_swept = now
        for ident in list(self._owed):
            try:
                ctl.send_multipart([ident, _PING], zmq.NOBLOCK)  # taken only if the pipe is empty
            except zmq.Again:
                continue  # still holding its reply
            except zmq.ZMQError:
                pass  # gone: its pipe, and the reply in it, were freed
            del self._owed[ident]

    def _answer(self, body: bytes, frame: Any = None) -> list[bytes]:
        req = msgpack.unpackb(body, raw=False, strict_map_key=True)
        if not isinstance(req, dict):
            raise ValueError("request is not a map")
        op = req.get("op")
        if op == "stop":
            return [wire.encode(self._stop_asked(req, frame))]
        if op == "done":  # a viewer has everything up to the end frame
            self.viewers_done += 1
            return [wire.encode({"op": "done"})]
        if op == "hello":
            # step, status and alerts: what `accmon ls` and the picker show of a run, without its history.
            return [wire.encode({"op": "hello", "run": self.run_.run_id, "rank": self.run_.rank, "head_seq": self.seq,
                                 "first_seq": self.log.first_seq, **self.run_.meta(), "step": self.step,
                                 "status": self.end_status or "running", "alerts": len(self.alert_states),
                                 "alerts_active": sum(self.alert_states.values()), "stop_refused": self.stops_refused})]
        if op == "history":
            since = req.get("since", 1)
            if not isinstance(since, int) or isinstance(since, bool) or since < 1:
                raise ValueError("'since' must be a positive integer")
            limit = req.get("max_frames", HISTORY_MAX_FRAMES)
            limit = min(limit, HISTORY_MAX_FRAMES) if isinstance(limit, int) and limit > 0 else HISTORY_MAX_FRAMES
            frames = self.log.read(since, limit, HISTORY_MAX_BYTES)
            start = max(since, self.log.first_seq)
            last = start + len(frames) - 1
            header = {"op": "history", "since": since, "first_seq": start, "last_seq": last, "head_seq": self.seq,
                      "missing": start - since, "more": last < self.seq}
            return [wire.encode(header), *frames]
        raise ValueError(f"unknown op {op!r}")


def stop_note_path(launch: str, rank: int | None = None) -> str | None:
    """Where a rank of `accmon run`'s command `launch` notes that --stop-on stopped it (rank None: the glob)."""
    if not launch or not all(c.isalnum() or c in "-_" for c in launch):
        return None
    return os.path.join(registry.runtime_dir(), f"{launch}.stopped.{'*' if rank is None else rank}")


def wire_json(obj: Any) -> str:
    return json.dumps(_plain(obj))


def _number(name: str, value: Any) -> float | int | None:
    """A logged value as a plain number: numpy scalars and 0-d tensors convert, anything else is dropped."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2**63):
        return value
    try:
        # Runs on the I/O thread, never the training thread: a device tensor's sync costs training nothing.
        number = float(value)
    except Exception:
        report_once(f"value:{name}", f"log(): {name}={type(value).__name__} is not a number; it is left out")
        return None
    report_once(f"coerced:{name}", f"log(): {name} is a {type(value).__name__}; converted with float() (pass a number to save the conversion)")
    return number


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, bytes, bool, int, float)):
        return obj if not isinstance(obj, int) or abs(obj) < 2**63 else float(obj)
    try:
        return float(obj)
    except Exception:
        return repr(obj)


def _sanitized(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame msgpack could not encode, made encodable: columns become numbers, everything else plain data."""
    out = {k: _plain(v) for k, v in frame.items() if k != "cols"}
    if "cols" in frame:
        out["cols"] = {str(name): [_number(name, v) for v in values] for name, values in frame["cols"].items()}
    return out


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
