"""Leak checks: a test that leaves a thread, a zmq socket or context, a child process or an open file behind fails,
in its own teardown, with a message that names what it left.

Why: a zmq context left to the garbage collector runs `term()` from inside whatever test happens to be running
when the collector fires; with a socket that still holds queued messages and the default LINGER, `term()` waits
for ever, and the suite hangs in a test that did nothing wrong. Leaks are caught where they happen instead, and
what leaked is closed (linger 0), stopped or killed, so that one leak fails one test and never a later one.

Each check waits a bounded time for what is already on its way out (a thread finishing its close, a child that
was sent a signal): the wait ends on the event, the bound only limits a real leak.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest
import zmq

# How long a thread or child already shutting down may take to finish after its test (a bound, not a wait).
GRACE_S = float(os.environ.get("ACCMON_LEAK_GRACE_S", "10"))

# Threads that libraries start once per process and keep by design: not a test's leak.
PERSISTENT_THREAD_PREFIXES = (
    "pytest_timeout",  # pytest-timeout's own timer
    "asyncio_",  # the default executor of an event loop a library keeps for the process
    "ThreadPoolExecutor-",  # concurrent.futures pools kept by libraries (torch, hypothesis) for the process
    "IPythonHistorySavingThread",
    "QueueFeederThread",
)
# File descriptors that libraries open lazily once and keep (a shared library's data, the random device).
PERSISTENT_FD_PREFIXES = ("/dev/", "anon_inode:", "/proc/", "/sys/")

_sockets: weakref.WeakSet[zmq.Socket] = weakref.WeakSet()
_contexts: weakref.WeakSet[zmq.Context] = weakref.WeakSet()


def track_zmq() -> None:
    """Record every zmq socket and context made from now on (the project's and the tests' own)."""
    socket_init, context_init = zmq.Socket.__init__, zmq.Context.__init__
    if getattr(socket_init, "_accmon_tracked", False):
        return

    def tracked_socket_init(self: zmq.Socket, *args, **kwargs) -> None:
        socket_init(self, *args, **kwargs)
        _sockets.add(self)

    def tracked_context_init(self: zmq.Context, *args, **kwargs) -> None:
        context_init(self, *args, **kwargs)
        _contexts.add(self)

    tracked_socket_init._accmon_tracked = True  # type: ignore[attr-defined]
    zmq.Socket.__init__ = tracked_socket_init  # type: ignore[method-assign]
    zmq.Context.__init__ = tracked_context_init  # type: ignore[method-assign]


def _fds() -> dict[int, str]:
    out = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: no file check
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between the listing and the look
            pass
    return out


@dataclass
class Snapshot:
    threads: set[threading.Thread] = field(default_factory=set)
    sockets: set[int] = field(default_factory=set)
    contexts: set[int] = field(default_factory=set)
    children: set[int] = field(default_factory=set)
    fds: dict[int, str] = field(default_factory=dict)


def snapshot() -> Snapshot:
    return Snapshot(
        threads=set(threading.enumerate()),
        sockets={id(s) for s in list(_sockets) if not s.closed},
        contexts={id(c) for c in list(_contexts) if not c.closed},
        children={p.pid for p in psutil.Process().children(recursive=True)},
        fds=_fds(),
    )


def _alive_children(before: set[int]) -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid} ({' '.join(p.cmdline())[:160]})"
    except psutil.Error:
        return f"pid {p.pid}"


def find_leaks(before: Snapshot) -> list[str]:
    """What was made since `before` and is still open; each is closed, stopped or killed as it is reported."""
    deadline = time.monotonic() + GRACE_S
    problems: list[str] = []

    threads = [t for t in threading.enumerate()
               if t not in before.threads and t is not threading.current_thread()
               and not t.name.startswith(PERSISTENT_THREAD_PREFIXES)]
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for t in threads:
        if t.is_alive():
            problems.append(f"thread {t.name!r} ({'daemon' if t.daemon else 'not daemon'}) still running")

    children = _alive_children(before.children)
    if children:
        psutil.wait_procs(children, timeout=max(0.0, deadline - time.monotonic()))
    for p in _alive_children(before.children):
        problems.append(f"child process {_describe(p)} still running (killed)")
        try:
            p.kill()
            p.wait(5)
        except psutil.Error:
            pass

    for s in list(_sockets):
        if not s.closed and id(s) not in before.sockets:
            problems.append(f"zmq socket {s!r} left open (closed with linger 0)")
            s.close(linger=0)
    for c in list(_contexts):
        if not c.closed and id(c) not in before.contexts and c is not getattr(zmq.Context, "_instance", None):
            problems.append(f"zmq context {c!r} left open (destroyed with linger 0)")
            c.destroy(linger=0)

    # Sockets and pipes belong to zmq, subprocesses and the probe's doorbell: reported above through their owners.
    candidates = {fd: target for fd, target in _fds().items()
                  if before.fds.get(fd) != target and not target.startswith(PERSISTENT_FD_PREFIXES)
                  and not target.startswith(("socket:", "pipe:"))}
    if candidates:
        # A file another thread has open for a moment (a traceback read for a warning) is not a leak: one that is
        # still open, the same, a moment later is.
        time.sleep(0.2)
        now = _fds()
        for fd, target in sorted(candidates.items()):
            if now.get(fd) == target:
                problems.append(f"file descriptor {fd} -> {target} left open")
    return problems


def leak_report(problems: list[str]) -> Iterator[str]:
    yield "the test left these behind (close them in the test, or in a fixture):"
    for p in problems:
        yield f"  - {p}"


# -- the pytest hooks (tests/conftest.py registers them; `pytest -p tests.leaks` loads them anywhere) --------------
LEAK_BASELINE = pytest.StashKey[Snapshot]()


def pytest_configure(config: pytest.Config) -> None:
    track_zmq()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """The leak baseline: what was open before the test's set-up. A module- or session-scoped fixture that this
    set-up opened owns what it made: then the baseline is taken after the set-up instead."""
    before = snapshot()
    info = getattr(item, "_fixtureinfo", None)
    broad = [d for defs in (info.name2fixturedefs.values() if info else ()) for d in defs if d.scope != "function"]
    fresh = [d for d in broad if d.cached_result is None]
    try:
        return (yield)
    finally:
        if any(d.cached_result is not None for d in fresh):
            before = snapshot()
        item.stash[LEAK_BASELINE] = before


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """After every fixture of the test is finalised: anything the test opened and left open fails it, here."""
    result = yield
    before = item.stash.get(LEAK_BASELINE, None)
    if before is not None:
        problems = find_leaks(before)
        if problems:
            pytest.fail("\n".join(leak_report(problems)), pytrace=False)
    return result
