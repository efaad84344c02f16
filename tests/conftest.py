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

# The files that take longest (10 s and more each, idle: real training processes, torchrun, sshd, the demos),
# heaviest first. `make test` deals whole files to two xdist workers in collection order; in name order these sat
# at the end (tests/tui/test_s*, test_t*), and the worker that drew the last of them ran on alone for a minute
# while the other had nothing left. Dealt first, they leave short files for the end, and the workers finish
# together.
HEAVY_FIRST = (
    "tests/probe/test_lightning.py", "tests/tui/test_multihost.py", "tests/probe/test_torch_zero_code.py",
    "tests/tui/test_stop_on.py", "tests/tui/test_sweep.py", "tests/probe/test_stop_frameworks.py",
    "tests/test_gpu_check.py", "tests/tui/test_torchrun.py", "tests/tui/test_stop_key.py", "tests/tui/test_cli.py",
    "tests/tui/test_remote.py", "tests/probe/test_transport.py", "tests/tui/test_app_replay.py",
    "tests/tui/test_attach_endpoint.py", "tests/probe/test_system.py", "tests/probe/test_hf.py",
    "tests/tui/test_importers.py", "tests/probe/test_keras_probe.py", "tests/tui/test_app_extremes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heavy files first, each file's tests kept together and in their order (a stable sort)."""
    rank = {str(REPO / path): i for i, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(str(Path(item.path).resolve()), len(rank)))


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
