"""Reporting accmon's own failures without ever raising into the training loop."""

from __future__ import annotations

import sys
import threading

_reported: set[str] = set()
_lock = threading.Lock()


def say(message: str) -> None:
    """One line on stderr, prefixed so it is not taken for the training script's output."""
    try:
        stream = sys.stderr if sys.stderr is not None else sys.__stderr__
        if stream is not None:
            stream.write(f"accmon: {message}\n")
            stream.flush()
    except Exception:  # a closed stderr must not become the training script's problem
        pass


def report_once(key: str, message: str) -> bool:
    """Say `message` the first time `key` is reported; return whether it was said."""
    with _lock:
        if key in _reported:
            return False
        _reported.add(key)
    say(message)
    return True
