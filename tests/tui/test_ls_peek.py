"""`accmon ls` and the picker say each run's step, status, alert count and age (issue 21 item 5): one `hello` to
every rank at once, bounded in time; a rank that does not answer, or answers nonsense, shows "—"."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout

import msgpack
import pytest
import zmq

from accmon.probe import registry
from accmon.probe.run import Run
from accmon.tui.app_sources import RankPeek, peek_runs, run_peek
from accmon.tui.remote import print_entries
from tests.conftest import run_accmon
from tests.sshd import sshd  # noqa: F401  (the fixture)
from tests.tui.test_app_fixtures import run
from tests.tui.test_remote import training  # noqa: F401  (the fixture)

WAIT_S = 30.0


def _runs(a_steps: int = 42, b_steps: int = 7) -> tuple[Run, Run]:
    a = Run("alpha", rules=False)
    for s in range(a_steps):
        a.log(s, loss=1.0)
    a.alert({"id": "lr_too_high", "severity": "warning", "step": 10, "message": "m", "state": "active"})
    a.alert({"id": "dead_relu", "severity": "warning", "step": 12, "message": "m", "state": "active"})
    a.alert({"id": "dead_relu", "severity": "warning", "step": 12, "message": "m", "state": "cleared"})  # an update
    b = Run("beta", rules=False)
    for s in range(b_steps):
        b.log(s, loss=1.0)
    return a, b


def _peeks_when(entries: list[registry.RunEntry], done) -> dict:
    """Ask until the runs' I/O threads have sent what was logged (they batch on their own thread)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        peeks = peek_runs(entries)
        if done(peeks) or time.monotonic() > deadline:
            return peeks


def _silent_router(ctx: zmq.Context, run_id: str) -> tuple[zmq.Socket, registry.RunEntry]:
    """A registered 'run' (this live process) whose ROUTER takes requests and never answers."""
    pub, ctl = registry.socket_paths(run_id, 0)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{ctl}")
    entry = registry.RunEntry(run_id=run_id, rank=0, name="silent", host=registry.host_name(), pid=os.getpid(),
                              started=time.time() - 3 * 3600 - 60, cmd=["python", "hung.py"], pub=f"ipc://{pub}",
                              ctl=f"ipc://{ctl}")
    registry.register(entry)
    return router, entry


def test_ls_says_each_runs_step_status_alerts_and_age_and_a_silent_run_gets_dashes(zmq_ctx):
    a, b = _runs()
    router, silent = _silent_router(zmq_ctx, "0101000000-5113e7")
    try:
        entries = registry.list_runs()
        assert {e.name for e in entries} == {"alpha", "beta", "silent"}
        peeks = _peeks_when(entries, lambda p: (p.get((a.run_id, 0, os.getpid())) or RankPeek()).step == 41
                            and (p.get((b.run_id, 0, os.getpid())) or RankPeek()).step == 6)
        assert peeks[(a.run_id, 0, os.getpid())] == RankPeek(step=41, status="running", alerts=2, active=1)
        assert peeks[(b.run_id, 0, os.getpid())] == RankPeek(step=6, status="running", alerts=0, active=0)
        assert (silent.run_id, 0, os.getpid()) not in peeks  # asked, never answered: left out, not waited on

        buf = io.StringIO()
        with redirect_stdout(buf):
            print_entries(entries, peeks)
        lines = buf.getvalue().splitlines()
        assert lines[0].split()[5:10] == ["STEP", "STATUS", "ALERTS", "AGE", "COMMAND"]
        row = {line.split()[3]: line.split()[5:9] for line in lines[1:]}
        assert row["alpha"][:3] == ["41", "running", "2"] and "(1 active)" in buf.getvalue()
        assert row["beta"][:3] == ["6", "running", "0"]
        assert row["silent"] == ["—", "—", "—", "3h01m"]

        # The command itself: the same columns from a separate process, the silent run costing it one timeout.
        out = run_accmon("ls", timeout=60)
        assert out.returncode == 0, out.stderr
        listed = {line.split()[3]: line.split()[5:8] for line in out.stdout.splitlines()[1:]}
        assert listed["alpha"] == ["41", "running", "2"] and listed["silent"] == ["—", "—", "—"]
    finally:
        a.close()
        b.close()
        registry.unregister(silent)
        router.close(0)


def test_nonsense_answers_to_hello_show_as_dashes_never_as_text(zmq_ctx):
    pub, ctl = registry.socket_paths("0101000000-b4dbad", 0)
    router = zmq_ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{ctl}")
    entry = registry.RunEntry(run_id="0101000000-b4dbad", rank=0, name="hostile", host=registry.host_name(),
                              pid=os.getpid(), started=time.time(), cmd=[], pub=f"ipc://{pub}", ctl=f"ipc://{ctl}")
    reply = msgpack.packb({"op": "hello", "step": "\x1b[2J", "status": "\x1b]0;pwned\x07", "alerts": -3,
                           "alerts_active": True})

    def answer() -> None:
        if router.poll(WAIT_S * 1000):
            ident = router.recv_multipart()[0]
            router.send_multipart([ident, reply])

    peer = threading.Thread(target=answer)
    peer.start()
    try:
        peeks = peek_runs([entry], timeout=WAIT_S)
    finally:
        peer.join()
        router.close(0)
    assert peeks[(entry.run_id, 0, os.getpid())] == RankPeek()  # it answered: nothing of what it said is used
    buf = io.StringIO()
    with redirect_stdout(buf):
        print_entries([entry], peeks)
    assert "\x1b" not in buf.getvalue() and "pwned" not in buf.getvalue()


def test_a_run_of_several_ranks_is_its_furthest_step_and_all_its_alerts():
    es = [registry.RunEntry(run_id="r", rank=k, name="n", host="h", pid=10 + k, started=0.0, cmd=[], pub="", ctl="")
          for k in range(3)]
    peeks = {("r", 0, 10): RankPeek(step=99, status="running", alerts=2, active=2),
             ("r", 1, 11): RankPeek(step=97, status="crashed", alerts=1, active=0)}  # rank 2 did not answer
    p = run_peek(es, peeks)
    assert (p.step, p.status, p.alerts, p.active) == (99, "crashed", 3, 2)
    assert run_peek(es, {}).step is None


def test_the_picker_shows_each_live_runs_step_status_and_alerts():
    from accmon.tui.app import AccmonApp, PickerScreen

    a, b = _runs()
    try:
        entries = registry.list_runs()
        _peeks_when(entries, lambda p: (p.get((a.run_id, 0, os.getpid())) or RankPeek()).step == 41
                    and (p.get((b.run_id, 0, os.getpid())) or RankPeek()).step == 6)

        async def go():
            app = AccmonApp(None, attach=lambda es: None, list_runs=registry.list_runs)
            app.animation_level = "none"
            async with app.run_test(size=(140, 30)) as pilot:
                want = {"alpha": ["41", "running", "2 (1 active)"], "beta": ["6", "running", "0"]}
                rows: dict = {}
                deadline = time.monotonic() + WAIT_S
                # The picker scans every second, each rank given PEEK_TIMEOUT_S to answer: on a loaded machine a
                # scan can miss a rank ("—"), and the next one shows it. Wait for the rows, not for one scan.
                while rows != want and time.monotonic() < deadline:
                    await app.workers.wait_for_complete()
                    await pilot.pause(0.1)
                    screen = app.screen
                    if isinstance(screen, PickerScreen) and len(screen.runs) == 2:
                        table = screen.table
                        rows = {str(table.get_cell(k, "name")): [str(table.get_cell(k, c)) for c in ("step", "status", "alerts")]
                                for k in screen.runs}
                assert isinstance(app.screen, PickerScreen)
                labels = [str(c.label) for c in app.screen.table.columns.values()]
                assert labels[:7] == ["run", "name", "ranks", "step", "status", "alerts", "age"]
                assert rows == want
                # The screen as drawn: the compositor's frame can lag the table's update by a refresh.
                while not ("alerts" in app.screen_text() and "running" in app.screen_text()) and time.monotonic() < deadline:
                    await pilot.pause(0.1)
                assert "alerts" in app.screen_text() and "running" in app.screen_text()
        run(go())
    finally:
        a.close()
        b.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_plain_accmon_with_two_live_runs_opens_the_picker_in_a_real_terminal(tmp_path):
    from tests.tui.test_app_tmux import Tmux

    script = tmp_path / "idle.py"
    script.write_text("import sys, time, accmon.probe as a\nr = a.start(sys.argv[1])\n"
                      "for s in range(25):\n    r.log(s, loss=1.0)\nprint('up', flush=True)\ntime.sleep(60)\n")
    procs = [subprocess.Popen([sys.executable, str(script), name], stdout=subprocess.PIPE, text=True)
             for name in ("first-run", "second-run")]
    term = None
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "up"
        term = Tmux([sys.executable, "-m", "accmon.tui.cli"], width=140, height=30)
        screen = term.wait_for("Live runs on this host", "first-run", "second-run", "running", "24", timeout=60)
        assert "step" in screen and "alerts" in screen and "age" in screen
    finally:
        if term is not None:
            term.kill()
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def test_ls_over_ssh_says_the_remote_runs_step_and_status(sshd, training):
    # The accmon there asks its runs (`ls --json --here --peek`); an older one without --peek still lists them.
    out = run_accmon("ls", sshd.target(), timeout=WAIT_S)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if training.entry.run_id in line).split()
    step, status, alerts = row[5:8]
    assert step.replace(",", "").isdigit() and status == "running" and alerts == "0", row
    plain = json.loads(run_accmon("ls", sshd.target(), "--json", timeout=WAIT_S).stdout)
    assert "peek" not in plain[0]  # the listing attach reads is unchanged
