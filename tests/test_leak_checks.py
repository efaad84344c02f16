"""The leak checks themselves: a scratch test that leaks fails, by name, and what it left is cleaned up."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRATCH = textwrap.dedent(
    """
    import socket, subprocess, sys, threading
    import zmq

    kept = []

    def test_leaks_a_socket():
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind("inproc://leak")
        pub.send(b"queued")  # with the default LINGER, term() at collection would wait on this for ever
        kept.append((ctx, pub))

    def test_leaks_a_thread():
        stop = threading.Event()
        t = threading.Thread(target=stop.wait, name="leaky-worker", daemon=True)
        t.start()
        kept.append(stop)

    def test_leaks_a_child():
        kept.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))

    def test_leaks_a_file(tmp_path):
        kept.append(open(tmp_path / "open.txt", "w"))

    def test_closes_everything(tmp_path):
        ctx = zmq.Context()
        s = ctx.socket(zmq.PUB)
        s.close(0)
        ctx.term()
        with open(tmp_path / "closed.txt", "w") as fh:
            fh.write("x")
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    """
)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_leaking_test_fails_by_name_and_a_clean_one_passes(tmp_path, workers):
    # `make test` runs the suite in pytest-xdist workers: the checks must hold there as in one process.
    (tmp_path / "test_scratch.py").write_text(SCRATCH)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leaks", "-p", "no:cacheprovider", "-q", "-o", "timeout=120",
         *workers, "--rootdir", str(tmp_path), str(tmp_path / "test_scratch.py")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "ACCMON_LEAK_GRACE_S": "0.5"},
    )
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    assert "5 passed, 4 errors" in report, report
    for name, what in [("test_leaks_a_socket", "zmq socket"), ("test_leaks_a_thread", "thread 'leaky-worker'"),
                       ("test_leaks_a_child", "child process"), ("test_leaks_a_file", "open.txt left open")]:
        assert f"ERROR at teardown of {name}" in report, report
        section = report.split(f"ERROR at teardown of {name}")[1].split("ERROR at teardown of")[0]
        assert what in section, section
    assert "test_closes_everything" not in report.split("short test summary")[-1], report
