"""`accmon run` killed with SIGKILL takes its command with it (issue 16 item 13: the training ran on, orphaned)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ACCMON, write_script

TRAIN = """
import os, sys, time
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(0.05)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_accmon_run_ends_the_training(tmp_path):
    pid_file = tmp_path / "pid"
    script = write_script(tmp_path, "train.py", TRAIN)
    launcher = subprocess.Popen([*ACCMON, "run", "--headless", "--", sys.executable, script, str(pid_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_pid = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline and launcher.poll() is None, "the training never started"
            time.sleep(0.05)
        train_pid = int(pid_file.read_text())
        launcher.kill()
        launcher.wait(30)
        deadline = time.monotonic() + 30
        while alive(train_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(train_pid), "the training outlived its launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        if train_pid is not None and alive(train_pid):
            os.kill(train_pid, signal.SIGKILL)
