"""`--on-alert CMD`: tell someone. The user's command runs for each new alert at or above a severity, in the
viewer's process (never the training process), with the alert as JSON on stdin and a few fields in the
environment: enough for `notify-send`, a mail, or `curl` to a chat webhook.

It never blocks the viewer: commands run in the background, one at a time, from a short bounded queue, each with
a time limit; at most `per_minute` start in any minute. What is dropped, failed or timed out is said once per
kind through `say`, never raised. The command is the user's own (a shell line); what comes from the run (alert
text, run names) reaches it only as data, on stdin and in the environment, never inside the command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from accmon.probe.rules import SEVERITY_RANK

from .text import json_safe, printable

QUEUE = 16  # alerts waiting for their command; past this they are dropped and counted
TIMEOUT_S = 30.0
PER_MINUTE = 10
ENV_TEXT_MAX = 1000  # characters of the message in the environment (the whole alert is on stdin)


class AlertCommand:
    def __init__(self, cmd: str, *, min_severity: str = "warning", run_name: str = "", say: Callable[[str], None],
                 timeout_s: float = TIMEOUT_S, per_minute: int = PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min_severity not in SEVERITY_RANK:
            raise ValueError(f"severity must be one of {', '.join(SEVERITY_RANK)}, not {min_severity!r}")
        self.cmd = cmd
        self.min_rank = SEVERITY_RANK[min_severity]
        self.run_name = run_name
        self.say = say
        self.timeout_s = timeout_s
        self.per_minute = per_minute
        self.clock = clock
        self.sent: set[tuple] = set()  # (id, cause, rank) already told: a new alert is told once
        self.queue: deque[dict[str, Any]] = deque()
        self.started: deque[float] = deque()  # start times within the last minute
        self.counts = {"run": 0, "failed": 0, "timed_out": 0, "dropped": 0, "rate_limited": 0}
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._proc: subprocess.Popen | None = None
        # Started by the first alert: a viewer that never sees one leaves no thread behind.
        self._thread = threading.Thread(target=self._loop, name="accmon-on-alert", daemon=True)

    def offer(self, alert: dict[str, Any], rank: int = 0) -> None:
        """A new or updated alert: queued for the command if it is new, active and severe enough. Never blocks."""
        if not isinstance(alert, dict) or alert.get("state", "active") != "active":
            return
        if SEVERITY_RANK.get(str(alert.get("severity")), -1) < self.min_rank:
            return
        key = (alert.get("id"), alert.get("cause"), alert.get("rank", rank))
        with self._lock:
            if key in self.sent:
                return
            self.sent.add(key)
            if len(self.queue) >= QUEUE:
                self.counts["dropped"] += 1
                self._say_once("dropped", f"--on-alert: the command is behind; alerts past {QUEUE} waiting are "
                                          "dropped (counted)")
                return
            self.queue.append({**alert, "rank": key[2]})
            if not self._thread.is_alive() and not self._closing:
                self._thread.start()
        self._wake.set()

    def close(self, grace_s: float = 5.0) -> None:
        """Let the queued alerts go out for up to `grace_s`, then stop (a command still running is killed)."""
        deadline = self.clock() + grace_s
        while self.queue and self.clock() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.05)
        with self._lock:
            self._closing = True
        self._wake.set()
        proc = self._proc
        if proc is not None and proc.poll() is None and self.clock() >= deadline:
            _kill_group(proc)
        if self._thread.is_alive():
            self._thread.join(grace_s + self.timeout_s)

    # -- the command's thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing:
            self._wake.wait(1.0)
            self._wake.clear()
            while self.queue and not self._closing:
                now = self.clock()
                while self.started and now - self.started[0] >= 60.0:
                    self.started.popleft()
                if len(self.started) >= self.per_minute:
                    with self._lock:
                        self.counts["rate_limited"] += len(self.queue)
                        self.queue.clear()
                    self._say_once("rate", f"--on-alert: more than {self.per_minute} alerts in a minute; the "
                                           "rest of that minute's are not sent (counted)")
                    break
                with self._lock:
                    alert = self.queue.popleft()
                self.started.append(now)
                self._run(alert)

    def _run(self, alert: dict[str, Any]) -> None:
        env = {**os.environ,
               "ACCMON_ALERT_ID": str(alert.get("id", "")),
               "ACCMON_ALERT_SEVERITY": str(alert.get("severity", "")),
               "ACCMON_ALERT_STEP": str(alert.get("step", "")),
               "ACCMON_ALERT_RANK": str(alert.get("rank", 0)),
               "ACCMON_ALERT_MESSAGE": printable(str(alert.get("message", "")))[:ENV_TEXT_MAX],
               "ACCMON_RUN_NAME": printable(self.run_name)[:200]}
        body = json.dumps(json_safe({**alert, "run": self.run_name})).encode()
        try:
            proc = self._proc = subprocess.Popen(["/bin/sh", "-c", self.cmd], stdin=subprocess.PIPE,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                                 start_new_session=True)
        except OSError as exc:
            self.counts["failed"] += 1
            self._say_once("start", f"--on-alert: cannot start the command: {exc.strerror or exc}")
            return
        try:
            _, err = proc.communicate(body, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            self.counts["timed_out"] += 1
            self._say_once("timeout", f"--on-alert: the command ran past {self.timeout_s:g} s and was killed")
            return
        finally:
            self._proc = None
        self.counts["run"] += 1
        if proc.returncode != 0:
            self.counts["failed"] += 1
            tail = printable(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "")[:200]
            self._say_once(f"rc{proc.returncode}", f"--on-alert: the command failed (exit {proc.returncode})"
                                                  + (f": {tail}" if tail else ""))

    def _say_once(self, kind: str, line: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            try:
                self.say(line)
            except Exception:
                pass


def _kill_group(proc: subprocess.Popen) -> None:
    """The command and whatever it started (its own session): killing the shell alone left a `sleep` or a `curl`
    holding its pipes, and the command's thread waiting for them."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
