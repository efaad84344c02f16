"""The viewer's side of the transport: history first, then the live stream, with no gap and no duplicate.

The ZeroMQ guide's Clone pattern: subscribe first, then ask the probe's ROUTER for history since k; live frames
that arrive meanwhile wait in a buffer; frames at or below the last seq received are dropped. Every frame
carries a strictly increasing seq, and heartbeats carry the newest one, so a gap (PUB drops at its high-water
mark) is seen at once and repaired with one more history request. A reader thread does all socket work; the
UI (or the headless printer) drains decoded frames from it and is woken through `wake`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from accmon.probe import wire

POLL_MS = 100
STALL_AFTER_S = 3.0  # three missed heartbeats (the probe sends one a second)
HISTORY_RETRY_S = 2.0
LIVE_BUFFER_LIMIT = 200_000  # live frames held while history loads; past this they are re-read from history
# ... and at most this many bytes of them: a hostile publisher's big frames after a gap held 4.1 GB (issue 16).
# Only their bytes are held (decoded again when they are delivered): decoded, a frame can cost several times them.
LIVE_BUFFER_BYTES = 64 * 1024 * 1024
# What ZeroMQ itself queues for the reader thread is bounded in bytes too (issue 16 item 9). Its high-water mark
# counts messages, not bytes: at 100,000 a publisher's big frames could queue gigabytes. No legal frame is larger
# than wire.MAX_FRAME_BYTES (decode refuses it, and so does a recording), so a message over MAX_MESSAGE_BYTES is
# never read: ZeroMQ cuts the connection at its size header, before it allocates anything, and the viewer counts
# that (ClientStatus.cut_off), says so, and connects again. RCVHWM messages wait at most: RCVHWM × MAX_MESSAGE_BYTES
# bounds the queue (256 MiB). A legal fast run loses nothing by the small mark: the probe's own queue (SNDHWM
# 10,000) holds what the viewer has not taken yet, and what overflows it is repaired from history.
MAX_MESSAGE_BYTES = wire.MAX_FRAME_BYTES + 1024  # a frame; the slack is for ZeroMQ's own framing
LIVE_QUEUE_BYTES = 256 * 1024 * 1024
RCVHWM = max(2, LIVE_QUEUE_BYTES // MAX_MESSAGE_BYTES)  # 3
# The control socket gets one history reply at a time (at most HISTORY_MAX_BYTES, or one frame over it), and a
# retry may cross it: two replies wait at most. Each part is bounded by MAX_MESSAGE_BYTES as above.
DEALER_RCVHWM = 2
# After the live connection drops: ZeroMQ starts reconnecting at once when the peer closed it; when ZeroMQ cut
# it (a message over MAX_MESSAGE_BYTES, or not ZeroMQ) it does not. Wait this long for the first sign of it.
CUT_GRACE_S = 0.5
STOP_RETRY_S = 1.0  # a stop request unanswered (the probe's reply pipe held a history reply) is sent again
STOP_TRIES = 5


@dataclass(frozen=True)
class ClientStatus:
    """What the viewer knows about its connection, for the header and for `attach --headless`."""

    state: str = "connecting"  # connecting | live | stalled | ended | closed
    last_seq: int = 0
    head_seq: int = 0  # newest seq the probe has announced
    dropped_live: int = 0  # live frames the probe could not send (repaired from history)
    gaps_repaired: int = 0
    history_missing: int = 0  # frames the probe no longer had (no recording, memory budget exceeded)
    malformed: int = 0  # frames that failed to decode (ignored)
    cut_off: int = 0  # live connections cut because a message was over MAX_MESSAGE_BYTES (or not ZeroMQ)
    dropped_steps: int = 0  # steps the probe's bounded queue dropped (its heartbeats say): lost for good
    message: str | None = None


class RunClient:
    """Receives one rank of one run. Thread-safe `drain()`; never blocks the caller."""

    def __init__(self, pub: str, ctl: str, *, since: int = 1, curve: dict[str, bytes] | None = None,
                 arrays: bool = False) -> None:
        """`arrays`: steps frames' packed columns as numpy arrays (wire.decode), for a viewer that stores them
        so; by default lists, as every other reader of frames takes them."""
        self.pub_endpoint = pub
        self.arrays = arrays
        # Wall time of the last frame or heartbeat from the rank, or of its connection closing (a killed process's
        # socket closes at its death: between heartbeats, that is the moment it fell silent).
        self.heard_at: float | None = None
        self.ctl_endpoint = ctl
        self.curve = curve
        self.wake = threading.Event()
        self._queue: deque[tuple[dict[str, Any], bytes]] = deque()
        self._status = ClientStatus(last_seq=since - 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The viewer's stop key: the reason to send (set from any thread; the reader sends it, again every
        # STOP_RETRY_S until the probe answers, at most STOP_TRIES times), and the probe's answer.
        self._stop_wanted: str | None = None
        self._stop_sent_at = 0.0
        self._stop_tries = 0
        self.stop_reply: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="accmon-client", daemon=True)

    # -- the consumer's side ----------------------------------------------------------------------------
    def start(self) -> RunClient:
        self._thread.start()
        return self

    @property
    def status(self) -> ClientStatus:
        return self._status

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        """Decoded frames in seq order, at most `max_frames`."""
        return [f for f, _ in self.drain_with_bytes(max_frames)]

    def drain_with_bytes(self, max_frames: int | None = None) -> list[tuple[dict[str, Any], bytes]]:
        """(frame, the exact bytes received) pairs, for recorders that must write the very same frames."""
        out: list[tuple[dict[str, Any], bytes]] = []
        q = self._queue
        while q and (max_frames is None or len(out) < max_frames):
            out.append(q.popleft())
        if not q:
            self.wake.clear()
            if q:  # appended between the check and the clear
                self.wake.set()
        return out

    def request_stop(self, reason: str = "") -> None:
        """Ask the run to stop at its next step (the `stop` request, docs/frames.md); the answer lands in
        `stop_reply` ({"op": "stop", "ok": bool, "why"?}). Any thread; never blocks."""
        self.stop_reply = None
        self._stop_tries = 0
        self._stop_sent_at = 0.0
        self._stop_wanted = reason

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._set(state="closed")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the reader thread ------------------------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _configure(self, s: zmq.Socket) -> None:
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self.curve:
            s.curve_secretkey = self.curve["secret"]
            s.curve_publickey = self.curve["public"]
            s.curve_serverkey = self.curve["server"]

    def _open_sub(self, ctx: zmq.Context) -> tuple[zmq.Socket, zmq.Socket]:
        sub = ctx.socket(zmq.SUB)
        monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
        self._configure(sub)
        sub.setsockopt(zmq.RCVHWM, RCVHWM)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.pub_endpoint)
        return sub, monitor

    def _run(self) -> None:
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        self._sub: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        try:
            self._configure(dealer)
            dealer.setsockopt(zmq.RCVHWM, DEALER_RCVHWM)
            self._sub, self._monitor = self._open_sub(ctx)
            dealer.connect(self.ctl_endpoint)
            self._loop(ctx, dealer)
        except Exception as exc:  # never let the viewer die with its reader
            self._set(state="closed", message=f"receiver stopped: {exc}")
            self.wake.set()
        finally:
            if self._sub is not None:
                self._sub.disable_monitor()
                self._sub.close(0)
            if self._monitor is not None:
                self._monitor.close(0)
            dealer.close(0)
            # destroy, not term: any socket still open (a set-up that failed half way) is closed with linger 0
            # instead of making term() wait for ever.
            ctx.destroy(linger=0)

    def _loop(self, ctx: zmq.Context, dealer: zmq.Socket) -> None:
        assert self._sub is not None and self._monitor is not None
        sub, monitor = self._sub, self._monitor
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        self._buffer: dict[int, bytes] = {}  # seq → the frame's bytes
        self._buffer_bytes = 0
        self._history_sent_at: float | None = None
        self._last_heard = time.monotonic()
        self._said_done = False
        self._request_history(dealer)
        while not self._stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if dealer in events:
                self._on_history(dealer)
            if sub in events:
                self._on_live(sub, dealer)
            if monitor in events and self._on_disconnect(monitor):
                # A SUB that reconnects does not always subscribe again (seen with libzmq 4.3.5 when the probe
                # made its XPUB anew): a fresh socket does. The gap is repaired from history as after any drop.
                for s in (sub, monitor):
                    poller.unregister(s)
                sub.disable_monitor()
                sub.close(0)
                monitor.close(0)
                self._sub = self._monitor = None
                self._sub, self._monitor = sub, monitor = self._open_sub(ctx)
                poller.register(sub, zmq.POLLIN)
                poller.register(monitor, zmq.POLLIN)
            now = time.monotonic()
            st = self._status
            if self._history_sent_at is not None and now - self._history_sent_at > HISTORY_RETRY_S:
                self._request_history(dealer)  # lost (the probe restarted its socket) or not yet connected
            if self._stop_wanted is not None and now - self._stop_sent_at >= STOP_RETRY_S:
                self._send_stop(dealer, now)
            if self._status.state == "ended" and not self._said_done:
                self._said_done = True  # lets the probe exit without waiting for us
                self._send(dealer, {"op": "done"})
            if st.state == "live" and now - self._last_heard > STALL_AFTER_S:
                self._set(state="stalled", message=f"no frame or heartbeat for {now - self._last_heard:.0f} s"
                          + (f"; {self._cut_words()}" if st.cut_off else ""))
                self.wake.set()

    def _cut_words(self) -> str:
        n = self._status.cut_off
        cap = MAX_MESSAGE_BYTES // 1024
        size = f"{cap // 1024} MiB" if cap >= 1024 else f"{cap} KiB"
        return (f"the live connection was cut off {n} time{'s' if n > 1 else ''}: the run sent a message over "
                f"the {size} frame limit (or not ZeroMQ), which was not read")

    def _on_disconnect(self, monitor: zmq.Socket) -> bool:
        """True when the live socket's connection dropped; counted as cut off when ZeroMQ cut it (see CUT_GRACE_S)."""
        dropped = retried = False
        deadline = None
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                if not dropped or retried:
                    break
                # Dropped with no reconnection under way yet: it follows at once when the peer closed (the same
                # ZeroMQ thread starts it), never when ZeroMQ cut the connection itself.
                if deadline is None:
                    deadline = time.monotonic() + CUT_GRACE_S
                left = deadline - time.monotonic()
                if left <= 0 or not monitor.poll(max(1, int(left * 1000))):
                    break
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                dropped = True
                if self.heard_at is not None:
                    self.heard_at = time.time()
            elif event["event"] == zmq.EVENT_CONNECT_RETRIED and dropped:
                retried = True
        if dropped and not retried:
            self._set(cut_off=self._status.cut_off + 1)
            self._set(message=self._cut_words() + "; connecting again")
            self.wake.set()
        return dropped

    def _send_stop(self, dealer: zmq.Socket, now: float) -> None:
        if self._stop_tries >= STOP_TRIES:
            self._stop_wanted = None
            self.stop_reply = {"op": "stop", "ok": False, "why": "the run did not answer"}
            self.wake.set()
            return
        self._stop_tries += 1
        self._stop_sent_at = now
        self._send(dealer, {"op": "stop", "reason": self._stop_wanted or ""})

    def _request_history(self, dealer: zmq.Socket) -> None:
        self._history_sent_at = time.monotonic()
        since = self._status.last_seq + 1
        self._send(dealer, {"op": "history", "since": since})

    def _send(self, dealer: zmq.Socket, request: dict[str, Any]) -> None:
        try:
            dealer.send(wire.encode(request), zmq.NOBLOCK)
        except zmq.Again:
            # Not connected (yet), or refused by a CURVE probe whose allow-list lacks our key: the retry timer
            # asks again; the reader goes on.
            self._set(message="cannot reach the run's control socket (not up yet, or our key is not allowed)")

    def _on_history(self, dealer: zmq.Socket) -> None:
        while True:
            try:
                parts = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                header = wire.decode_message(parts[0])
                # "busy": the probe holds too many unread replies now; the retry timer asks again. "ping": it
                # checks whether we took our last reply.
                if header.get("op") in ("done", "busy", "ping"):
                    continue
                if header.get("op") == "stop":
                    self._stop_wanted = None
                    self.stop_reply = {"op": "stop", "ok": header.get("ok") is True,
                                       "why": str(header.get("why") or "")[:300]}
                    self.wake.set()
                    continue
                if header.get("op") != "history":
                    raise ValueError(f"unexpected reply {header!r:.80}")
            except Exception as exc:
                self._set(malformed=self._status.malformed + 1, message=f"bad history reply: {exc}")
                continue
            self._heard()
            if header.get("since") != self._status.last_seq + 1:
                continue  # the answer to a request superseded since
            missing = header.get("missing", 0)
            if missing:
                self._set(history_missing=self._status.history_missing + missing,
                          last_seq=self._status.last_seq + missing,
                          message=f"{missing} frames were no longer held by the probe (record to a file to keep all)")
            for payload in parts[1:]:
                self._accept(payload, from_history=True)
            self._set(head_seq=max(self._status.head_seq, header.get("head_seq", 0)))
            if header.get("more"):
                self._request_history(dealer)
            else:
                self._history_sent_at = None
                self._flush_buffer(dealer)
                if self._status.state in ("connecting", "stalled"):
                    self._set(state="live")
            self.wake.set()

    def _on_live(self, sub: zmq.Socket, dealer: zmq.Socket) -> None:
        for _ in range(10_000):
            try:
                payload = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._heard()
            try:
                frame = wire.decode(payload, arrays=self.arrays)
            except wire.FrameError as exc:
                self._set(malformed=self._status.malformed + 1, message=f"ignored a malformed frame: {exc}")
                continue
            st = self._status
            if frame["kind"] == "hb":
                dropped_steps = frame.get("dropped_steps")
                self._set(head_seq=max(st.head_seq, frame["seq"]), dropped_live=frame.get("dropped", 0)
                          if isinstance(frame.get("dropped"), int) else st.dropped_live,
                          dropped_steps=dropped_steps if isinstance(dropped_steps, int) else st.dropped_steps)
                if frame["seq"] > st.last_seq and self._history_sent_at is None and not self._buffer:
                    self._request_history(dealer)  # the newest frames were dropped: fetch them
                continue
            seq = frame["seq"]
            if seq <= st.last_seq:
                continue
            if self._history_sent_at is None and seq == st.last_seq + 1 and not self._buffer:
                self._deliver(frame, payload)
                continue
            if (seq not in self._buffer and len(self._buffer) < LIVE_BUFFER_LIMIT
                    and self._buffer_bytes + len(payload) <= LIVE_BUFFER_BYTES):
                self._buffer[seq] = payload
                self._buffer_bytes += len(payload)
            if self._history_sent_at is None:
                self._set(gaps_repaired=st.gaps_repaired + 1)
                self._request_history(dealer)
        self.wake.set()

    def _accept(self, payload: bytes, *, from_history: bool) -> None:
        try:
            frame = wire.decode(payload, arrays=self.arrays)
        except wire.FrameError as exc:
            self._set(malformed=self._status.malformed + 1, message=f"ignored a malformed frame: {exc}")
            return
        if frame["seq"] == self._status.last_seq + 1:
            self._deliver(frame, payload)

    def _flush_buffer(self, dealer: zmq.Socket) -> None:
        """Deliver buffered live frames that now follow on; ask for history again at the first hole."""
        for seq in sorted(self._buffer):
            last = self._status.last_seq
            if seq > last + 1:
                self._request_history(dealer)
                return
            payload = self._buffer.pop(seq)
            self._buffer_bytes -= len(payload)
            if seq == last + 1:
                self._deliver(wire.decode(payload, arrays=self.arrays), payload)  # it decoded when it came

    def _deliver(self, frame: dict[str, Any], payload: bytes) -> None:
        self._queue.append((frame, payload))
        changes: dict[str, Any] = {"last_seq": frame["seq"], "head_seq": max(self._status.head_seq, frame["seq"])}
        if frame["kind"] == "end":
            changes.update(state="ended", message=f"run {frame.get('status', 'ended')}")
        elif self._status.state in ("connecting", "stalled") and self._history_sent_at is None:
            changes["state"] = "live"
        self._set(**changes)

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        self.heard_at = time.time()
        if self._status.state == "stalled":
            self._set(state="live", message=None)
