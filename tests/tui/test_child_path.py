"""Children the viewer starts never import from the current directory (issue 16 item 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import accmon.probe as accmon
from accmon.tui.app_sources import ReplaySource


@pytest.fixture
def trap_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a `msgpack.py` that leaves a mark when imported, made the current directory."""
    trap = tmp_path / "downloads"
    trap.mkdir()
    (trap / "msgpack.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\nraise SystemExit(3)\n")
    monkeypatch.chdir(trap)
    return tmp_path


def test_replay_rules_child_never_runs_code_from_the_current_directory(trap_dir: Path):
    path = str(trap_dir / "run.accmon")
    run = accmon.start("trap", record=path)
    for i in range(50):
        run.log(loss=float("nan") if i > 40 else 1.0)
    run.close()
    source = ReplaySource(path)
    source.first_drawn.set()
    source.start()
    try:
        deadline = time.monotonic() + 60
        while source.status.rules != "done":
            assert time.monotonic() < deadline, f"the rules child never finished: {source.status}"
            source.wake.wait(0.2)
            source.drain()
    finally:
        source.close()
        if source._proc is not None:
            source._proc.wait(10)
            assert source._proc.stdout is not None
            source._proc.stdout.close()
    assert not (trap_dir / "ran").exists(), "the rules child imported msgpack.py from the current directory"
    assert any(a.get("id") == "nan_loss" for a in source.final_alerts or [])
