"""Attach over SSH with a real sshd on a loopback port: listing, forwarding, a cut connection, back-off.

The "remote host" is this machine reached only through sshd (tests/sshd.py): the run registers in the test's
runtime directory, which the ssh session sees through `SetEnv`/`AcceptEnv`, as a GPU node's own would be.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from accmon.probe import registry
from accmon.tui import remote
from accmon.tui.headless import HeadlessViewer
from tests.conftest import ACCMON, all_steps, read_frames, run_accmon, write_script
from tests.sshd import sshd  # noqa: F401  (the fixture)

WAIT_S = 60  # an upper bound so that a broken build fails instead of hanging; never a timing assertion

LOOP = textwrap.dedent(
    """
    import os, sys, time
    import accmon.probe as accmon
    stop = sys.argv[1]
    run = accmon.start("remote-train")
    step = 0
    while not os.path.exists(stop) and step < 200_000:
        accmon.log(step, loss=1.0 / (step + 1), acc=min(1.0, step / 1000))
        step += 1
        time.sleep(0.002)
    run.close()
    """
)


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Training:
    """A real training loop in a subprocess that runs until told to stop."""

    def __init__(self, tmp_path: Path) -> None:
        self.stop_file = tmp_path / "stop"
        script = write_script(tmp_path, "train.py", LOOP)
        self.proc = subprocess.Popen([sys.executable, script, str(self.stop_file)])
        wait_until(lambda: registry.list_runs() or self.proc.poll() is not None, "the run to register")
        assert self.proc.poll() is None, "the training script died"
        self.entry = registry.list_runs()[0]

    def stop(self) -> int:
        self.stop_file.touch()
        return self.proc.wait(WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def training(tmp_path: Path):
    t = Training(tmp_path)
    yield t
    t.kill()


def recorded_steps(path: Path) -> tuple[list[int], list[dict]]:
    frames = read_frames(path)
    return all_steps(frames), frames


def assert_every_step_once(path: Path) -> list[dict]:
    steps, frames = recorded_steps(path)
    ends = [f for f in frames if f["kind"] == "end"]
    assert ends and ends[-1]["status"] == "finished", "the recording has no end frame"
    assert steps == list(range(len(steps))), "steps missing, repeated or out of order"
    assert len(steps) == ends[-1]["total_steps"]
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(1, len(seqs) + 1)), "frames missing or repeated"
    return frames


class Viewer:
    """A HeadlessViewer on a RemoteRun, in a thread, recording to a file: what `attach --headless` does."""

    def __init__(self, rr: remote.RemoteRun, record: Path) -> None:
        self.rr = rr
        self.viewer = HeadlessViewer(rr.entries, record=str(record), discover=False, quiet=True)
        self.code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.code.append(self.viewer.run(until=rr.gone)), daemon=True)
        self.thread.start()

    def finish(self) -> int:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the viewer did not end with the run"
        return self.code[0]


# -- targets and listings (no ssh needed) -------------------------------------------------------------------
def test_targets_parse_and_hostile_ones_are_refused():
    t = remote.parse_target("ssh://alice@gpu-7.example.org:2222/my-run")
    assert (t.user, t.host, t.port, t.run) == ("alice", "gpu-7.example.org", 2222, "my-run")
    assert remote.parse_target("GpuNode").host == "GpuNode"  # case kept for ssh_config Host patterns
    assert remote.parse_target("ssh://[::1]:22").host == "::1"
    assert str(remote.parse_target("ssh://bob@h:22/r")) == "ssh://bob@h:22/r"
    for bad in ("ssh://-oProxyCommand=touch%20x", "ssh://h:99999", "ssh://", "tcp://h:1", "ssh://-x@h"):
        with pytest.raises(remote.RemoteError):
            remote.parse_target(bad)


def test_a_forwarded_rank_is_not_judged_by_a_local_pid_or_silence(tmp_path):
    # The forward's sockets are on this machine, so the registry would look for the remote pid here: a process
    # that ended (or, on another host, any process with that number) must not end the viewer while the ssh
    # connection is being re-made. The remote side says when the run is gone.
    import socket

    from accmon.tui.live import rank_gone

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "r.pub"))
    try:
        entry = registry.RunEntry("r1", 0, "n", "gpu-7 via ssh", int(done.stdout), 1.0, ["python"],
                                  f"ipc://{tmp_path}/r.pub", f"ipc://{tmp_path}/r.ctl", pid_start="1")
        silent = type("Client", (), {"heard_at": 1.0})()  # heard once, long ago
        assert rank_gone(entry, silent)  # a local entry of that pid is gone
        forwarded = registry.RunEntry(**{**entry.__dict__, "extra": {"remote": "ssh://gpu-7"}})
        assert not rank_gone(forwarded, silent)
    finally:
        sock.close()


def test_a_hostile_listing_is_validated_not_trusted():
    good = {"run_id": "r1", "rank": 0, "name": "n", "host": "h", "pid": 1, "started": 1.0, "cmd": ["python"],
            "pub": "ipc:///tmp/x.pub", "ctl": "ipc:///tmp/x.ctl", "world_size": 1, "new_field": {"ignored": 1}}
    bad = [
        {**good, "pub": "file:///etc/passwd"},  # not an endpoint the viewer may connect to
        {**good, "rank": "0"},
        {**good, "rank": True},
        {**good, "cmd": [1, 2]},
        {k: v for k, v in good.items() if k != "ctl"},
        "a string",
        None,
    ]
    entries = remote.parse_listing(json.dumps([good, *bad]))
    assert [e.run_id for e in entries] == ["r1"]
    for junk in (b"\xff\xfe", b"Welcome to the cluster!\n[]", b"{}", b"[" * 100_000):
        with pytest.raises(remote.RemoteError):
            remote.parse_listing(junk)
    with pytest.raises(remote.RemoteError, match="refusing"):
        remote.parse_listing(b" " * (remote.MAX_LISTING_BYTES + 1))


# -- a real sshd ------------------------------------------------------------------------------------------
def test_ls_over_ssh(sshd, training):
    out = run_accmon("ls", sshd.target(), "--json", timeout=WAIT_S)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [(e["run_id"], e["name"]) for e in listed] == [(training.entry.run_id, "remote-train")]
    human = run_accmon("--ssh", f"{sshd.user}@127.0.0.1:{sshd.port}", "ls", timeout=WAIT_S)
    assert human.returncode == 0 and training.entry.run_id in human.stdout and "remote-train" in human.stdout


def test_attach_headless_over_ssh_records_history_then_live(sshd, training, tmp_path):
    rec = tmp_path / "viewer.accmon"
    viewer = subprocess.Popen([*ACCMON, "attach", sshd.target("remote-train"), "--headless", "--record", str(rec)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: rec.exists() and len(recorded_steps(rec)[0]) > 200, "steps over ssh")
        assert training.stop() == 0
        out, err = viewer.communicate(timeout=WAIT_S)
    finally:
        viewer.kill()
    assert viewer.returncode == 0, err
    assert "through ssh" in err and "run finished" in err
    frames = assert_every_step_once(rec)
    assert frames[0]["kind"] == "meta" and frames[0]["name"] == "remote-train"  # history first: from seq 1


def test_a_cut_connection_reconnects_and_continues_with_no_gap(sshd, training, tmp_path):
    events: list[str] = []
    rr = remote.open_remote(sshd.target(), on_event=events.append)
    rec = tmp_path / "viewer.accmon"
    try:
        # Nothing listens on the network for the forward: a private directory of owner-only Unix sockets.
        sock_dir = os.path.dirname(rr.entries[0].pub[len("ipc://"):])
        assert stat.S_IMODE(os.stat(sock_dir).st_mode) == 0o700
        for ep in (rr.entries[0].pub, rr.entries[0].ctl):
            assert stat.S_IMODE(os.stat(ep[len("ipc://"):]).st_mode) & 0o077 == 0
        v = Viewer(rr, rec)
        wait_until(lambda: v.viewer.steps > 100, "steps before the cut")
        first_ssh = rr.ssh_pid
        os.kill(first_ssh, signal.SIGKILL)  # the connection drops mid-run; training goes on meanwhile
        wait_until(lambda: any("lost" in e for e in events), "the viewer to say the connection is lost")
        wait_until(lambda: rr.state == "connected" and rr.reconnects == 1, "the reconnection")
        assert rr.ssh_pid != first_ssh
        at_reconnect = v.viewer.steps
        wait_until(lambda: v.viewer.steps > at_reconnect + 100, "live steps after the reconnection")
        assert training.stop() == 0
        assert v.finish() == 0
    finally:
        rr.close()
    assert any("reconnected" in e for e in events), events
    assert_every_step_once(rec)
    assert not os.path.exists(sock_dir), "the private socket directory is removed at close"


def test_back_off_while_the_host_is_down_then_the_run_continues(sshd, training, tmp_path):
    events: list[str] = []
    rr = remote.open_remote(sshd.target(), on_event=events.append)
    rec = tmp_path / "viewer.accmon"
    try:
        v = Viewer(rr, rec)
        wait_until(lambda: v.viewer.steps > 100, "steps before the outage")
        sshd.stop()  # the host stops answering ssh ...
        os.kill(rr.ssh_pid, signal.SIGKILL)  # ... and the connection is gone
        wait_until(lambda: sum("failed" in e for e in events) >= 3, "three failed reconnects")
        waits = [float(e.rsplit("next try in ", 1)[1].split()[0]) for e in events if "next try in" in e]
        assert waits[:3] == [remote.BACKOFF_FIRST_S, 2 * remote.BACKOFF_FIRST_S, 4 * remote.BACKOFF_FIRST_S]
        assert rr.state == "reconnecting" and not rr.gone()
        sshd.start(port=sshd.port)
        wait_until(lambda: rr.state == "connected", "the reconnection once sshd is back")
        at_reconnect = v.viewer.steps
        wait_until(lambda: v.viewer.steps > at_reconnect + 50, "live steps after the outage")
        assert training.stop() == 0
        assert v.finish() == 0
    finally:
        rr.close()
    assert_every_step_once(rec)


def test_a_run_that_ends_while_disconnected_is_reported_gone(sshd, training, tmp_path):
    events: list[str] = []
    rr = remote.open_remote(sshd.target(), on_event=events.append)
    rec = tmp_path / "viewer.accmon"
    try:
        v = Viewer(rr, rec)
        wait_until(lambda: v.viewer.steps > 50, "steps before the outage")
        sshd.stop()
        os.kill(rr.ssh_pid, signal.SIGKILL)
        training.stop()  # ends, and leaves the registry, while nobody can see it
        wait_until(lambda: any("failed" in e for e in events), "a failed reconnect")
        sshd.start(port=sshd.port)
        assert v.finish() == 1  # the viewer ends instead of waiting forever, and says what it got
    finally:
        rr.close()
    assert rr.state == "gone" and any("ended on" in e for e in events), events
    steps, _ = recorded_steps(rec)
    assert steps == list(range(len(steps)))  # what was received is whole, with no duplicate


def test_clear_errors_when_nothing_can_be_attached(sshd, monkeypatch):
    out = run_accmon("--ssh", f"{sshd.user}@127.0.0.1:{sshd.port}", timeout=WAIT_S)
    assert out.returncode == 2 and "no live run on 127.0.0.1" in out.stderr
    out = run_accmon("attach", f"ssh://{sshd.user}@127.0.0.1:{sshd.port}/nosuch", "--headless", timeout=WAIT_S)
    assert out.returncode == 2 and "no live run matching 'nosuch'" in out.stderr
    env = {**os.environ, "ACCMON_REMOTE_CMD": "/nonexistent/accmon"}
    out = run_accmon("ls", sshd.target(), timeout=WAIT_S, env=env)
    assert out.returncode == 2 and "accmon was not found on 127.0.0.1" in out.stderr and "ACCMON_REMOTE_CMD" in out.stderr
    sshd.stop()
    out = run_accmon("ls", sshd.target(), timeout=WAIT_S)
    assert out.returncode == 2 and "ssh to" in out.stderr and "refused" in out.stderr.lower()


def test_every_rank_of_a_multi_rank_run_is_forwarded(sshd, tmp_path):
    from accmon.probe import Run

    ranks = [Run("ddp", run_id="0101000000-ddp", rank=r, world_size=2) for r in (0, 1)]
    rec = tmp_path / "viewer.accmon"
    try:
        for step in range(200):
            for run in ranks:
                run.log(step, loss=1.0 / (step + 1))
        rr = remote.open_remote(sshd.target("ddp"))
        assert [e.rank for e in rr.entries] == [0, 1]
        assert len({e.pub for e in rr.entries} | {e.ctl for e in rr.entries}) == 4
        v = Viewer(rr, rec)
        wait_until(lambda: v.viewer.steps >= 400, "both ranks' history")
        for run in ranks:
            run.close()
        assert v.finish() == 0
        rr.close()
    finally:
        for run in ranks:
            run.close()
    frames = read_frames(rec)
    for r in (0, 1):
        assert all_steps(frames, rank=r) == list(range(200))


# -- the TUI --------------------------------------------------------------------------------------------------
async def wait_async(app, pilot, cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        app.sync_now()
        await pilot.pause(0.05)


def test_the_app_says_when_ssh_drops_and_continues_after_it(sshd, training, tmp_path):
    import asyncio

    from accmon.tui.app import AccmonApp

    t = remote.parse_target(sshd.target())
    rec = tmp_path / "app.accmon"
    source = remote.RemoteSource(t, remote.list_remote(t), record=str(rec))  # connects on its own thread
    app = AccmonApp(source)
    app.animation_level = "none"
    notes: list[str] = []

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_async(app, pilot, lambda: (app.head_step() or 0) > 100, "steps in the app")
            # The host stops answering before the connection drops, so that the header's stalled state lasts
            # until the test has seen it: with sshd up, the reconnection could come before the app was looked at
            # again on a loaded machine (it did so in a loaded fresh-clone run).
            sshd.stop()
            os.kill(source.remote.ssh_pid, signal.SIGKILL)

            def said_lost() -> bool:
                info = app.header_info()
                notes.append(f"{info.state}: {info.note}")
                # "connection to … lost (…); reconnecting", then "reconnect N to … failed (…); next try in …"
                return info.state == "stalled" and any(w in (info.note or "") for w in ("lost", "failed"))

            await wait_async(app, pilot, said_lost, "the header to say the connection is lost")
            sshd.start(port=sshd.port)
            await wait_async(app, pilot, lambda: "reconnected" in (app.header_info().note or ""), "reconnected")
            at = app.head_step()
            await wait_async(app, pilot, lambda: app.head_step() > at + 100, "live steps after the reconnection")
            training.stop()
            await wait_async(app, pilot, lambda: app.header_info().state == "finished", "the run's end")

    asyncio.run(go())
    # The app closed its source, and with it ssh (the run may have been seen gone on the remote host first).
    assert source.remote.state in ("closed", "gone") and source.remote.proc.poll() is not None
    assert_every_step_once(rec)  # the app's own recording: no gap, no duplicate across the cut


def test_the_app_picks_among_the_runs_on_the_remote_host(sshd, tmp_path):
    import asyncio

    from accmon.probe import Run
    from accmon.tui.app import AccmonApp, PickerScreen

    runs = [Run(name, run_id=f"010100000{i}-{name}") for i, name in enumerate(("older", "newer"))]
    try:
        for run in runs:
            for step in range(50):
                run.log(step, loss=1.0)
        t = remote.parse_target(sshd.target())
        listing = remote.list_remote(t)
        assert {e.name for e in listing} == {"older", "newer"}
        opened: list[remote.RemoteSource] = []

        def attach(entries):
            opened.append(remote.RemoteSource(t, entries))
            return opened[-1]

        app = AccmonApp(None, attach=attach, list_runs=remote.RemoteLister(t, listing), pick=True)
        app.animation_level = "none"

        async def go() -> None:
            async with app.run_test(size=(120, 40)) as pilot:
                await wait_async(app, pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.runs,
                                 "the picker with the remote runs")
                assert set(app.screen.runs) == {r.run_id for r in runs}
                await pilot.press("enter")
                await wait_async(app, pilot, lambda: (app.head_step() or 0) == 49, "the chosen run's history")
                assert app.store.name in ("older", "newer")

        asyncio.run(go())
        assert len(opened) == 1 and opened[0].remote.gone() and opened[0].remote.proc.poll() is not None
    finally:
        for run in runs:
            run.close()
