"""Shared fixtures: every test gets its own short runtime directory (ipc:// paths are limited to ~107 bytes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

# The leak checks run around every test (tests/leaks.py): importing its hooks here registers them.
from tests.leaks import pytest_configure, pytest_runtest_setup, pytest_runtest_teardown  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
ACCMON = [sys.executable, "-m", "accmon.tui.cli"]


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context]:
    """A zmq context of the test's own, destroyed with linger 0 at its end whatever happened: never left to the
    garbage collector, whose term() would wait for ever on a socket holding queued messages."""
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> str:
    path = tempfile.mkdtemp(prefix="am", dir="/tmp")
    monkeypatch.setenv("ACCMON_RUNTIME_DIR", path)
    # A developer's own `accmon keys` must not change what the tests see (CURVE on every tcp:// bind).
    monkeypatch.setenv("XDG_CONFIG_HOME", os.path.join(path, "config"))
    monkeypatch.delenv("ACCMON_CONFIG_DIR", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_accmon(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real `accmon` command in a subprocess."""
    return subprocess.run([*ACCMON, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def write_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def read_frames(path: str | os.PathLike) -> list[dict]:
    from accmon.probe.recording import RecordingReader

    return list(RecordingReader(path).frames())


def all_steps(frames: list[dict], rank: int | None = None) -> list[int]:
    return [s for f in frames if f["kind"] == "steps" and (rank is None or f["rank"] == rank) for s in f["steps"]]
