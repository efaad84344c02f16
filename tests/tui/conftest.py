"""Recordings of the shipped demos, made once per test session (tests/tui/record_demos.py) and shared by the
app's tests: the sweep over every demo, and the tests of what a demo showed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# healthy_ddp needs torchrun (it reads RANK from the environment): the multi-rank tests cover its kind of run.
DEMOS = sorted(p.stem for p in (REPO / "demos").glob("*.py") if not p.name.startswith("_") and p.stem != "healthy_ddp")
# Each demo's own length (0): fewer epochs record in half the time but lose alerts the demos exist to show
# (overfitting, val_loss_stagnating, the mild faults). record_demos.py imports torch once: ~20 s of CPU for all.
DEMO_EPOCHS = 0
DEMO_JOBS = 2


class DemoRecordings:
    """`get(name)` → the path of that demo's recording, made on first use (several at once with `prepare`)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.paths: dict[str, str] = {}
        self.log: list[str] = []

    def prepare(self, names: list[str]) -> None:
        todo = [n for n in names if n not in self.paths]
        if not todo:
            return
        env = dict(os.environ, ACCMON_RUNTIME_DIR=self.folder, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, str(Path(__file__).with_name("record_demos.py")), self.folder,
                               str(DEMO_EPOCHS), str(DEMO_JOBS), *todo], capture_output=True, text=True, env=env,
                              timeout=600)
        self.log += proc.stdout.splitlines()
        for name in todo:
            path = os.path.join(self.folder, name + ".accmon")
            if not os.path.exists(path):
                log = Path(self.folder, name + ".log")
                raise AssertionError(f"demo {name} was not recorded: {proc.stderr}\n"
                                     f"{log.read_text() if log.exists() else ''}")
            self.paths[name] = path

    def get(self, name: str) -> str:
        self.prepare([name])
        return self.paths[name]


@pytest.fixture(scope="session")
def demo_recordings() -> Iterator[DemoRecordings]:
    folder = tempfile.mkdtemp(prefix="amdemo", dir="/tmp")
    try:
        yield DemoRecordings(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def demo_recording(demo_recordings: DemoRecordings) -> Callable[[str], str]:
    return demo_recordings.get
