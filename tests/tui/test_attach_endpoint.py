"""`accmon attach --headless ENDPOINT`: a run named by its socket, not by its registry entry, has no known process,
so whether it is still there is told from the connection (frames, heartbeats, the end frame), never from a pid.

Before: the entry made for an endpoint had pid 0, read as a dead process, and the viewer quit about a second
after it attached ("rank 0 stopped without an end frame", exit 1) while the run went on.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import ACCMON, write_script

WAIT_S = 60.0  # a guard against a hang only: every wait below ends on the line it waits for


class Viewer:
    """`accmon attach --headless ENDPOINT` as a real subprocess; its output (stderr with stdout) read line by
    line on a thread, so the test can go on training while it waits for a line."""

    def __init__(self, endpoint: str) -> None:
        self.proc = subprocess.Popen([*ACCMON, "attach", "--headless", endpoint], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.said: list[str] = []
        self._reader = threading.Thread(target=self._read, name="test-viewer-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output: the viewer exited

    def poll_for(self, text: str) -> bool:
        """Whether a line holding `text` has come (lines are taken as they come, never waited for); fails at once
        when the viewer's output ended without it."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return False
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"the viewer exited (code {self.proc.wait(WAIT_S)}) before saying {text!r} "
                                     "while the run went on:\n" + "".join(self.said))
            self.said.append(line)
            if text in line:
                return True

    def wait_for(self, text: str) -> None:
        while True:
            line = self.lines.get(timeout=WAIT_S)
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"the viewer exited (code {self.proc.wait(WAIT_S)}) before saying {text!r}:\n"
                                     + "".join(self.said))
            self.said.append(line)
            if text in line:
                return

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def viewer_of(endpoint: str) -> Iterator[Viewer]:
    v = Viewer(endpoint)
    try:
        yield v
    finally:
        v.close()


def marker(run, step: int, name: str) -> None:
    run.alert({"id": name, "severity": "info", "step": step, "message": f"marker {name}", "fix": "-",
               "state": "active"})


def test_attach_headless_by_ipc_endpoint_stays_until_the_run_ends(runtime_dir):
    from accmon.probe.run import Run

    run = Run("by-endpoint", rules=False)
    try:
        assert run.endpoints is not None
        pub = run.endpoints[0]
        assert pub.startswith("ipc://") and pub.endswith(".pub")
        step = 0
        run.log(step, loss=1.0)
        marker(run, step, "marker_attached")

        def train_until(done) -> None:
            """Log a step every few milliseconds (the training loop's own pace, not a wait) until `done()`, which
            fails as soon as the viewer's output ends while the run goes on."""
            nonlocal step
            while not done():
                step += 1
                run.log(step, loss=1.0 / (step + 1))
                time.sleep(0.002)

        with viewer_of(pub) as viewer:
            # The run trains while the viewer starts and takes its history; the first marker says it receives.
            train_until(lambda: viewer.poll_for("marker_attached"))
            # Then 1,500 more steps, seconds past the one after which the viewer used to quit: the viewer, still
            # attached, prints a marker logged after them. A viewer that quit has ended its output before.
            until = step + 1500
            train_until(lambda: viewer.poll_for("marker_later") or step >= until)
            marker(run, step, "marker_later")
            viewer.wait_for("marker_later")
            run.close()
            viewer.wait_for("run finished")
            assert viewer.proc.wait(WAIT_S) == 0, "".join(viewer.said)
            assert f"{step + 1:,} steps received (steps 0 to {step:,})" in viewer.said[-1], viewer.said[-1]
            assert not any("without an end frame" in line for line in viewer.said), "".join(viewer.said)
    finally:
        run.close()


def test_attach_headless_by_endpoint_ends_when_the_killed_run_falls_silent(tmp_path, runtime_dir):
    # No pid to watch: the viewer of a run killed without its end frame learns it from the connection (closed
    # at the process's death, then nothing for SILENT_GONE_S) and says so, instead of waiting for ever.
    src = write_script(tmp_path, "train.py", textwrap.dedent("""
        import time, accmon.probe as accmon
        run = accmon.start("killed-by-endpoint", rules=False)
        run.alert({"id": "marker_attached", "severity": "info", "step": 0, "message": "m", "fix": "-",
                   "state": "active"})
        print(run.endpoints[0], flush=True)
        step = 0
        while True:
            run.log(step, loss=1.0)
            step += 1
            time.sleep(0.005)
    """))
    train = subprocess.Popen([sys.executable, src], stdout=subprocess.PIPE, text=True)
    try:
        assert train.stdout is not None
        pub = train.stdout.readline().strip()
        assert pub.startswith("ipc://"), pub
        with viewer_of(pub) as viewer:
            viewer.wait_for("marker_attached")
            train.kill()
            train.wait(WAIT_S)
            viewer.wait_for("without an end frame")
            assert "rank 0 fell silent without an end frame" in viewer.said[-1], viewer.said[-1]
            assert viewer.proc.wait(WAIT_S) == 1
    finally:
        if train.poll() is None:
            train.kill()
        train.wait(WAIT_S)
        assert train.stdout is not None
        train.stdout.close()


def test_the_apps_live_source_of_an_endpoint_is_live_until_the_run_ends(runtime_dir):
    # The TUI's side (`accmon attach ipc://…` without --headless): the same entry read as a dead process made the
    # source "gone" at once, which the header shows as a crashed run, while frames kept coming.
    from accmon.probe.run import Run
    from accmon.tui.app_sources import LiveSource
    from accmon.tui.cli import resolve_target
    from accmon.tui.store import RunStore

    run = Run("tui-by-endpoint", rules=False)
    source = None
    try:
        assert run.endpoints is not None
        for step in range(100):
            run.log(step, loss=1.0 / (step + 1))
        source = LiveSource(resolve_target(run.endpoints[0]))
        store = RunStore()
        source.start()

        def pump(until) -> None:
            deadline = time.monotonic() + WAIT_S  # a guard only: the wait ends on the source's wake-up
            while not until():
                assert time.monotonic() < deadline, f"timed out; source status {source.status}"
                store.ingest(source.drain())
                source.wake.wait(0.05)

        pump(lambda: source.status.state in ("live", "gone", "ended") and store.rank(0).axis.n == 100)
        assert source.status.state == "live", source.status
        for step in range(100, 200):
            run.log(step, loss=0.5)
        pump(lambda: store.rank(0).axis.n == 200)
        assert source.status.state == "live", source.status
        run.close()
        pump(lambda: store.status() is not None or source.status.state == "gone")
        assert source.status.state == "ended" and store.status() == "finished", source.status
    finally:
        if source is not None:
            source.close()
        run.close()
