"""`Run`: what the training thread talks to. Every method only appends to an in-memory inbox.

The training thread never touches a socket or the disk: the I/O thread (iothread.py) drains the inbox. The
inbox is bounded; when the I/O side cannot keep up, new items are dropped and counted rather than let memory
grow or the training loop wait.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

from . import registry
from .errors import report_once, say
from .inbox import ALERT, COLUMNS, END, FACTS, ROW
from .iothread import IOThread
from .stop import ENV_STOP_ON, StopOn, StopOnError, StopTraining, StoreLink, parse_stop_on
from .system import SystemStats

__version__ = "0.1.0"

ENV_RUN_ID = "ACCMON_RUN_ID"
ENV_RECORD = "ACCMON_RECORD"
ENV_NAME = "ACCMON_NAME"
ENV_BIND = "ACCMON_BIND"
INBOX_LIMIT = 1_000_000  # items; a row of 10 scalars is ~1 KB of Python objects: ~1 GB worst case before dropping

_current: Run | None = None
_current_lock = threading.Lock()


def _env_int(*names: str, default: int) -> int:
    for n in names:
        v = os.environ.get(n)
        if v and v.strip().lstrip("-").isdigit():
            return int(v)
    return default


class Run:
    """One monitored run (one rank of it). Create it with `accmon.probe.start()`.

    `log()` costs about a microsecond: it appends a tuple to a deque. Everything else — frames, rules,
    sockets, the recording — happens on the run's I/O thread.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        record: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        bind: str | None = None,
        rules: bool = True,
        memory_budget: int | None = None,
        cmd: list[str] | None = None,
        stop_on: str | list[str] | StopOn | None = None,
    ) -> None:
        # Checked first, so that a wrong id is said before anything starts (a StopOnError naming the known ids).
        self.stop_on = parse_stop_on(stop_on) if stop_on is not None else _env_stop_on()
        if bind is not None:
            from .security import check_bind

            check_bind(bind)  # refuses a wide bind without CurveZMQ keys, with a message saying what to do
        # One id for all ranks of a job on every host: $ACCMON_RUN_ID, torchrun's job, `accmon run`'s token, or new.
        self.run_id = run_id or registry.run_id_from_env()
        self.rank = rank if rank is not None else _env_int("RANK", "LOCAL_RANK", default=0)
        self.world_size = world_size if world_size is not None else _env_int("WORLD_SIZE", default=1)
        self.name = name or os.environ.get(ENV_NAME) or _script_name()
        record = record if record is not None else os.environ.get(ENV_RECORD) or None
        if record is not None and self.world_size > 1:
            record = _rank_path(os.fspath(record), self.rank)
        self.record = os.fspath(record) if record is not None else None
        self.bind = bind if bind is not None else os.environ.get(ENV_BIND) or None
        self.rules = rules
        self.memory_budget = memory_budget or 256 * 1024 * 1024
        self.cmd = cmd if cmd is not None else [sys.executable, *sys.argv]
        self.started = time.time()
        self.host = socket.gethostname()
        self.step = -1
        self.steps_logged = 0
        self.dropped = 0
        self.closed = False
        # A stop asked for ({"by": "alert", "reason": ...}), set by the I/O thread (or `request_stop`) and read by
        # the training side once a step: None until then. `stopped` is the request once the training honoured it.
        self.stop_request: dict[str, Any] | None = None
        self.stopped: dict[str, Any] | None = None
        self._stop_link = StoreLink.from_env(self.run_id, self.rank, self.world_size, dict(os.environ))
        self._inbox: deque[tuple] = deque()
        self._pid = os.getpid()
        self.system = SystemStats()  # memory and GPU figures, joined to a step about once a second
        self._io = IOThread(self)
        self._io.start()
        # Wait for the sockets so that errors surface now and `endpoints` is known; never long.
        self._io.ready.wait(5.0)

    # -- the training-thread API ----------------------------------------------------------------------------
    def log(self, step: int | None = None, **scalars: float) -> None:
        """Record scalars for one step (the next step when `step` is None). Python numbers only."""
        if step is None:
            step = self.step + 1
        if step != self.step:
            figures = self.system_figures(step)
            if figures:
                scalars = {**figures, **scalars}
        inbox = self._inbox
        # Queued before it is counted: a Ctrl-C (KeyboardInterrupt) between the two must not leave a step counted
        # as logged that was never queued (the run would read as having lost it).
        if len(inbox) < INBOX_LIMIT:
            inbox.append((ROW, step, time.time(), scalars))
            if self._io.asleep:  # only the first row after a quiet spell rings; the I/O thread then batches
                self._io.wake()
        else:
            self.dropped += 1
        if step != self.step:
            self.step = step
            self.steps_logged += 1

    def system_figures(self, step: int) -> dict[str, float]:
        """The machine's figures (probe/system.py) to join to `step`, when it is one that gets them, else {}; new
        device facts go out with them. Shared by `log` and the PyTorch probe's own rows."""
        system = self.system
        if not system.due(step, time.monotonic()):
            return {}
        figures = system.sample()
        facts = system.facts()
        if facts is not None:
            self.set_facts(**facts)
        return figures

    def log_columns(
        self,
        steps: list[int],
        cols: dict[str, list],
        hists: dict[str, list] | None = None,
        times: list[float] | None = None,
    ) -> None:
        """Record many steps at once, columnar: `cols[name][i]` belongs to `steps[i]` (None = not measured)."""
        if not steps:
            return
        if steps[-1] != self.step:
            self.steps_logged += sum(1 for s in steps if s > self.step)
            self.step = max(self.step, steps[-1])
        if len(self._inbox) < INBOX_LIMIT:
            self._inbox.append((COLUMNS, steps, cols, hists, times))
            self._io.wake()
        else:
            self.dropped += len(steps)

    def set_facts(self, **facts: Any) -> None:
        """Static facts about the run (model, loss, optimizer, data); merged into what is known."""
        self._inbox.append((FACTS, facts))
        self._io.wake()

    def alert(self, alert: dict[str, Any]) -> None:
        """Publish an alert made outside the rules engine (a framework integration's own finding)."""
        self._inbox.append((ALERT, alert))
        self._io.wake()

    def close(self, status: str = "finished", error: str | None = None, timeout: float = 10.0, *,
              stopped: dict[str, Any] | None = None) -> None:
        """End the run: the end frame is sent and recorded, the sockets and registry entry go. Idempotent.

        `stopped` ({"by": "user", "reason": "KeyboardInterrupt"}) says who stopped a run that did not crash; the
        end frame adds the step. A KeyboardInterrupt passed as a crash (`"KeyboardInterrupt: "`, as a framework's
        `with` block words it) is taken as the user's stop: a Ctrl-C is not a crash."""
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self._pid:
            return  # a forked child: the I/O thread belongs to the parent
        if status == "crashed" and stopped is None and error is not None:
            kind = error.split(":", 1)[0]
            if kind == "StopTraining" or kind == "KeyboardInterrupt" and self.stopped is not None:
                status, error, stopped = "finished", None, self.stopped or self.stop_request or user_stop()
            elif kind == "KeyboardInterrupt":
                status, error, stopped = "finished", None, user_stop()
        if status == "finished" and self.stopped is not None and (stopped is None or stopped.get("by") == "user"):
            # The script caught StopTraining (saved, exited 0), or a framework ended its loop at our request; a
            # KeyboardInterrupt after we raised one is ours, not the user's Ctrl-C.
            stopped = self.stopped
        self._inbox.append((END, status, error, stopped))
        self._io.stop_requested.set()
        self._io.wake()
        self._io.join(timeout)
        if self._io.is_alive():
            report_once("close-timeout", f"the I/O thread did not finish within {timeout:.0f} s; the recording may lack its end")
        else:
            self.system.close()  # the memory figures' descriptor, read on this side (system.Statm)
        global _current
        with _current_lock:
            if _current is self:
                _current = None

    # -- stopping (stop.py) ---------------------------------------------------------------------------------
    def request_stop(self, stop: dict[str, Any]) -> None:
        """Ask the training to stop at its next step boundary (any thread; the first request wins). A multi-rank
        run tells its other ranks through the job's store, so that every rank stops, at the same step."""
        if self.stop_request is not None:
            return
        self.stop_request = dict(stop)
        if self._stop_link is not None and stop.get("from_rank") is None:
            self._stop_link.publish({**stop, "from_rank": self.rank})

    def honour_stop(self, step: int) -> dict[str, Any] | None:
        """Called by the training side at the boundary after `step` once `stop_request` is set: the request when
        the training is to stop now, None to go on (the ranks have not met yet, or it was honoured already)."""
        request = self.stop_request
        if request is None or self.stopped is not None:
            return None
        if self._stop_link is not None and not self._stop_link.agree(step):
            return None
        self.stopped = {**request, "step": step}
        return self.stopped

    def poll_stop(self) -> None:
        """The I/O thread's look for another rank's request (at most every few hundred ms)."""
        link = self._stop_link
        # Only a run that can stop itself (stop_on) listens for the others; a viewer asks every rank directly.
        if link is not None and self.stop_request is None and self.stop_on is not None:
            stop = link.poll()
            if stop is not None:
                self.request_stop(stop)

    # -- introspection ------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> tuple[str, str] | None:
        """(PUB, ROUTER) endpoints viewers connect to; None when the live view could not start."""
        return self._io.endpoints

    @property
    def dropped_live(self) -> int:
        return self._io.dropped_live

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "pid": os.getpid(), "cmd": self.cmd, "started": self.started,
                "world_size": self.world_size, "probe": __version__, "record": self.record}

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or issubclass(exc_type, SystemExit) and not exc.code:
            self.close("finished")
        elif issubclass(exc_type, StopTraining):
            self.close("finished", stopped=exc.stopped)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("finished", stopped=user_stop())
        else:
            self.close("crashed", error=f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return f"<accmon Run {self.run_id} rank {self.rank} {self.name!r} step {self.step}>"


def _env_stop_on() -> StopOn | None:
    """$ACCMON_STOP_ON (set by `accmon run --stop-on`, which checked it): a bad value is said, never fatal."""
    try:
        return parse_stop_on(os.environ.get(ENV_STOP_ON) or None)
    except StopOnError as exc:
        report_once("stop-on", f"${ENV_STOP_ON} ignored: {exc}")
        return None


def _script_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = os.path.basename(argv0)
    if base in ("", "-c", "-m", "ipykernel_launcher.py"):
        return "python"
    return os.path.splitext(base)[0]


def _rank_path(path: str, rank: int) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or '.accmon'}"


def start(name: str | None = None, **kwargs: Any) -> Run:
    """Start monitoring this process (or return the run already started). Closes itself at exit."""
    global _current
    with _current_lock:
        if _current is not None and not _current.closed and _current._pid == os.getpid():
            if kwargs.get("stop_on") is not None:  # asked for by a later start() or watch(): honoured, not dropped
                _current.stop_on = parse_stop_on(kwargs["stop_on"])
            return _current
        run = Run(name, **kwargs)
        _current = run
    atexit.register(_close_at_exit, run)
    wrap_excepthook()
    _hint_where_to_attach(run)
    return run


def user_stop() -> dict[str, Any]:
    """The end frame's `stopped` for a run the user interrupted (Ctrl-C): not a crash. The I/O thread adds the
    step. `by` names who stopped it, so that other stoppers (an alert) can say so in the same field."""
    return {"by": "user", "reason": "KeyboardInterrupt"}


def mark_crash(exc: BaseException) -> None:
    """The exception the training died of (the first one said wins), for the run's end frame at exit: an uncaught
    one (the excepthook), or one a framework caught and reported (Lightning's `on_exception`)."""
    if not hasattr(sys, "_accmon_crash"):
        sys._accmon_crash = f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]


def wrap_excepthook() -> None:
    """Make an uncaught exception end the run as *crashed*, with its message; a KeyboardInterrupt (Ctrl-C) ends
    it as stopped by the user instead (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "_accmon", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        # Read at exit by _close_at_exit, so the recording says *crashed* and why, or who stopped the run.
        if issubclass(exc_type, StopTraining):
            sys._accmon_stopped = exc.stopped  # type: ignore[attr-defined]
        elif issubclass(exc_type, KeyboardInterrupt):
            sys._accmon_stopped = user_stop()  # type: ignore[attr-defined]
        else:
            mark_crash(exc)
        previous(exc_type, exc, tb)

    hook._accmon = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _hint_where_to_attach(run: Run) -> None:
    # In a notebook or the REPL nobody ran `accmon run`: say once how to watch. Not under `accmon run`,
    # whose viewer is already attached.
    interactive = "ipykernel" in sys.modules or hasattr(sys, "ps1")
    if interactive and os.environ.get("ACCMON_AUTO") != "1":
        say(f"watching run {run.name} ({run.run_id}) — attach with `accmon attach {run.run_id}`")


def current() -> Run | None:
    """The run started in this process, if any."""
    run = _current
    if run is not None and (run.closed or run._pid != os.getpid()):
        return None
    return run


def _close_at_exit(run: Run) -> None:
    try:
        error = getattr(sys, "_accmon_crash", None)
        stopped = getattr(sys, "_accmon_stopped", None) if not error else None
        run.close("crashed" if error else "finished", error=error, stopped=stopped)
    except Exception:
        pass


def log(step: int | None = None, **scalars: float) -> None:
    """`log()` on the current run, starting one if none is running."""
    run = _current if _current is not None and not _current.closed else start()
    run.log(step, **scalars)


def _forget_in_child() -> None:
    # A forked child (DataLoader worker) inherits the Run but not its I/O thread: it must not log into it.
    global _current
    _current = None


os.register_at_fork(after_in_child=_forget_in_child)
