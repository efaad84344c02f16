"""The I/O thread's data path: the inbox becomes frames, each frame gets the next sequence number and goes to the
recording, the frame log (history for late joiners), the XPUB and the rules; the rules' alerts take the same path.

A part of `IOThread` (iothread.py), which owns the sockets and the loop that calls this.
"""

from __future__ import annotations

import json
import os
import struct
import time
from typing import Any

import zmq

from . import registry, wire
from .errors import report_once, say
from .framelog import FrameLog
from .inbox import ALERT, COLUMNS, END, FACTS, ROW, RunSide
from .recording import RecordingWriter
from .stop import alert_stop, stop_note_path

MAX_STEPS_PER_FRAME = 2048
MAX_ALERT_KEYS = 1024


class FrameEmitter:
    """Inbox to frames, and frames out: recording, frame log, XPUB, rules, heartbeats."""

    run_: RunSide
    seq: int
    step: int
    log: FrameLog
    writer: RecordingWriter | None
    pub: zmq.Socket | None
    diagnoser: Any
    alerts_sent: int
    alert_states: dict[tuple, bool]
    end_status: str | None
    dropped_live: int
    stops_refused: int

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


