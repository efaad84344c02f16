"""The I/O thread's ROUTER: history since k for late joiners and gap repair, `hello` for `accmon ls`, `done`, and
a viewer's `stop`, each reply bounded per peer and in bytes.

A part of `IOThread` (iothread.py), which owns the sockets and the loop that calls this.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from . import wire
from .errors import say
from .framelog import FrameLog
from .inbox import RunSide

HISTORY_MAX_FRAMES = 1000
HISTORY_MAX_BYTES = 8 * 1024 * 1024
MAX_REQUESTS_PER_TICK = 64  # a flood of requests must not starve the data path
# What replies a peer that asks and never reads can make the training process hold (issue 16: 8 such sockets
# grew it to 13 GB, each ROUTER pipe queueing up to 1,000 replies of 8 MiB). Each peer's pipe holds one reply
# (SNDHWM counts whole multipart messages), and a reply is only started when that pipe is empty: the peer took
# the last one. Across peers, replies not known to be taken are bounded in bytes; past the bound, a request
# gets a small "busy" answer and the viewer asks again.
HISTORY_INFLIGHT_BYTES = 24 * 1024 * 1024
OWED_SWEEP_S = 1.0  # how often, at most, peers owing a reply are checked for having taken it or gone
_PING = wire.encode({"op": "ping"})
_BUSY = wire.encode({"op": "busy"})


class HistoryServer:
    """Answers the ROUTER's requests (`history`, `hello`, `done`, `stop`)."""

    run_: RunSide
    seq: int
    step: int
    log: FrameLog
    security: Any
    alert_states: dict[tuple, bool]
    end_status: str | None
    viewers_done: int
    stops_refused: int
    requests_answered: int
    requests_refused: int
    _owed: dict[bytes, int]
    _owed_swept: float

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
        return "this viewer's key is not allowed to control the run (`accmon keys --allow=KEY --control` allows it)"

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
        req = wire.decode_message(body)
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

