"""What the training thread and the I/O thread share: the inbox's item tags, and the run as the I/O thread sees it.

`Run` (run.py) owns the inbox and starts the I/O thread (iothread.py); the I/O thread reads the run through
`RunSide`, a Protocol, so that run.py imports iothread.py and never the other way round.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from .stop import StopOn
from .system import SystemStats

# Inbox item tags (the first element of each tuple the training thread appends).
ROW, COLUMNS, FACTS, ALERT, END = range(5)


class RunSide(Protocol):
    """What the I/O thread reads of its run (run.Run), and the three calls it makes on it."""

    run_id: str
    rank: int
    world_size: int
    name: str
    cmd: list[str]
    started: float
    record: str | None
    bind: str | None
    rules: bool
    memory_budget: int
    steps_logged: int
    dropped: int
    stop_on: StopOn | None
    stop_request: dict[str, Any] | None
    system: SystemStats
    _inbox: deque[tuple]

    def meta(self) -> dict[str, Any]: ...

    def request_stop(self, stop: dict[str, Any]) -> None: ...

    def poll_stop(self) -> None: ...
