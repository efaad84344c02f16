"""The `accmon` command end to end: real processes, real sockets, real files."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from accmon.probe import wire
from accmon.probe.recording import HEADER, RecordingWriter
from tests.conftest import ACCMON, all_steps, read_frames, run_accmon, write_script

API_LOOP = textwrap.dedent(
    """
    import sys, time
    import accmon.probe as accmon
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for step in range(n):
        accmon.log(step, loss=1.0 / (step + 1), acc=min(1.0, step / n))
        if step % 100 == 0:
            time.sleep(0.01)
    {tail}
    """
)


def script(tmp_path, tail: str = "", name: str = "train.py") -> str:
    return write_script(tmp_path, name, API_LOOP.format(tail=tail))


def check_json(path) -> tuple[int, dict]:
    out = run_accmon("check", str(path), "--json")
    return out.returncode, json.loads(out.stdout)


def test_run_headless_records_and_check_reports_the_contract(tmp_path):
    rec = tmp_path / "r.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, script(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "run finished: 300 steps received" in out.stderr
    code, report = check_json(rec)
    run = report["run"]
    assert code == 0 and report["alerts"] == []
    assert run["status"] == "finished" and run["steps"] == 300 and run["last_step"] == 299
    assert run["ranks"] == [0] and run["name"] == "train" and run["id"] and run["exit_code"] == 0
    assert run["steps_logged"] == run["steps_recorded"] == 300 and run["steps_lost"] == 0 and run["complete"] is True
    human = run_accmon("check", str(rec))
    assert human.returncode == 0 and "finished, 300 steps" in human.stdout


def test_a_crashing_script_keeps_its_steps_and_says_crashed(tmp_path):
    rec = tmp_path / "r.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable,
                     script(tmp_path, tail="raise RuntimeError('CUDA out of memory')"))
    assert out.returncode == 1
    assert "RuntimeError: CUDA out of memory" in out.stderr  # the script's own traceback still shows
    _, report = check_json(rec)
    assert report["run"]["status"] == "crashed" and report["run"]["steps"] == 300
    assert "CUDA out of memory" in report["run"]["error"]


def test_exit_code_passes_through_and_a_nonzero_exit_is_a_crash(tmp_path):
    rec = tmp_path / "r.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, script(tmp_path, tail="sys.exit(3)"))
    assert out.returncode == 3
    _, report = check_json(rec)
    assert report["run"]["status"] == "crashed" and report["run"]["exit_code"] == 3


def test_kill_9_of_the_training_process(tmp_path):
    rec = tmp_path / "r.accmon"
    tail = "time.sleep(0.3); import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, script(tmp_path, tail=tail))
    assert out.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in out.stderr
    _, report = check_json(rec)
    assert report["run"]["status"] == "crashed" and report["run"]["error"] == "killed by SIGKILL"
    assert report["run"]["steps"] == 300


def test_a_recording_without_an_end_is_truncated(tmp_path):
    rec = tmp_path / "r.accmon"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, time, accmon.probe as accmon
        from accmon.probe.recording import RecordingReader
        run = accmon.start("t", record={str(rec)!r})
        for i in range(100): accmon.log(i, loss=1.0)
        # Killed once the steps are on disk (not after a fixed time a loaded machine may not give the I/O thread).
        while sum(len(f["steps"]) for f in RecordingReader({str(rec)!r}).frames() if f["kind"] == "steps") < 100:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    """)])
    proc.wait()
    code, report = check_json(rec)
    # Exit 3: the record is incomplete (issue 16); it used to exit 0 as if all was well.
    assert code == 3 and report["run"]["status"] == "truncated" and report["run"]["steps"] == 100
    assert report["run"]["complete"] is False and report["run"]["steps_logged"] is None


def test_ctrl_c_stops_both_cleanly(tmp_path):
    rec = tmp_path / "r.accmon"
    forever = script(tmp_path, tail="while True: time.sleep(0.05)")
    # As a shell starts a foreground command: SIGINT at its default. An ignored SIGINT is inherited down to
    # the training script (the POSIX rule for background jobs), and the full suite has reached this test with
    # it ignored.
    # PYTHONFAULTHANDLER: should a process hang, SIGABRT makes both print every thread's stack.
    proc = subprocess.Popen([*ACCMON, "run", "--headless", "--record", str(rec), "--", sys.executable, forever],
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (rec.exists() and all_steps(read_frames(rec))[-1:] == [299]):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    try:
        _, err = proc.communicate(timeout=30)  # reads stderr meanwhile: a full pipe must not be what hangs
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"accmon run and its command did not stop within 30 s of Ctrl-C; their stacks:\n{err[-8000:]}")
    assert proc.returncode == 130, err
    _, report = check_json(rec)
    # A Ctrl-C is the user's stop, not a crash (issue 21 item 12): tests/tui/test_stopped.py says the rest.
    assert report["run"]["status"] == "finished" and report["run"]["error"] is None
    assert report["run"]["stopped"] == {"by": "user", "reason": "KeyboardInterrupt", "step": 299}


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "empty file"),
        (b"epoch,loss\n1,0.5\n", "not an accmon recording"),
        (HEADER.pack(b"\x89ACCMON\r\n\x1a", 9, 0), "format version 9"),
        (random.Random(14).randbytes(5000), "not an accmon recording"),
    ],
    ids=["empty", "csv", "version-9", "noise"],
)
def test_check_unreadable_input_exits_2_with_one_clear_line(tmp_path, content, needle):
    path = tmp_path / "bad.accmon"
    path.write_bytes(content)
    out = run_accmon("check", str(path))
    assert out.returncode == 2
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_check_missing_file_and_directory(tmp_path):
    assert run_accmon("check", str(tmp_path / "nope.accmon")).returncode == 2
    out = run_accmon("check", str(tmp_path))
    assert out.returncode == 2 and "directory" in out.stderr


def test_check_reports_a_truncated_tail_with_its_offset(tmp_path):
    rec = tmp_path / "r.accmon"
    assert run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, script(tmp_path)).returncode == 0
    data = rec.read_bytes()
    cut = tmp_path / "cut.accmon"
    cut.write_bytes(data[: len(data) - 7])
    code, report = check_json(cut)
    # The end frame is intact (every step is there: finished); the exit frame was cut: damaged, exit 3.
    assert code == 3 and report["run"]["status"] == "finished" and report["run"]["complete"] is False
    (problem,) = report["run"]["problems"]
    assert problem["kind"] == "truncated" and problem["offset"] > HEADER.size


def test_check_exit_1_when_a_warning_fired(tmp_path):
    rec = tmp_path / "r.accmon"
    frames = [
        wire.envelope("meta", "x", 0, 1, -1, name="x"),
        # An id no rule makes (a framework integration's own alert): check keeps it as recorded.
        wire.envelope("alert", "x", 0, 2, 5, alert={"id": "integration_check", "severity": "critical", "step": 5,
                                                    "message": "loss is NaN", "evidence": {"loss": float("nan")},
                                                    "fix": "lower the learning rate", "state": "active"}),
        wire.envelope("steps", "x", 0, 3, 5, steps=[5], times=[0.0], cols={"loss": [float("nan")]}),
    ]
    w = RecordingWriter(rec)
    w.write([wire.encode(f) for f in frames])
    w.close()
    code, report = check_json(rec)
    assert code == 1
    (alert,) = [a for a in report["alerts"] if a["id"] == "integration_check"]
    assert alert["evidence"]["loss"] == "NaN"  # JSON has no NaN: spelled out, never null


def test_attach_headless_records_history_then_live(tmp_path):
    rec = tmp_path / "viewer.accmon"
    src = write_script(tmp_path, "slow.py", textwrap.dedent("""
        import time, accmon.probe as accmon
        run = accmon.start("slow")
        for step in range(2000):
            accmon.log(step, loss=1.0 / (step + 1))
            if step == 999:
                print(run.run_id, flush=True)
                time.sleep(1.0)
            time.sleep(0.001)
    """))
    train = subprocess.Popen([sys.executable, src], stdout=subprocess.PIPE, text=True)
    run_id = train.stdout.readline().strip()
    viewer = run_accmon("attach", run_id, "--headless", "--record", str(rec), timeout=60)
    train.wait()
    assert viewer.returncode == 0, viewer.stderr
    frames = read_frames(rec)
    assert all_steps(frames) == list(range(2000))
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    code, report = check_json(rec)
    assert report["run"]["status"] == "finished" and report["run"]["name"] == "slow"


def test_ls_lists_live_runs_and_attach_says_when_there_is_none(tmp_path):
    out = run_accmon("ls")
    assert out.returncode == 0 and "no live runs" in out.stdout
    assert "no live run" in run_accmon("attach", "--headless").stderr
    src = write_script(tmp_path, "idle.py", "import time, accmon.probe as a\nr=a.start('idle-run')\nprint('up', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, src], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        out = run_accmon("ls")
        assert "idle-run" in out.stdout
    finally:
        proc.kill()
        proc.wait()


def test_run_with_a_missing_command(tmp_path):
    out = run_accmon("run", "--headless", "--", "/nonexistent/program")
    assert out.returncode == 127 and "cannot start" in out.stderr


def test_a_command_that_starts_no_run_says_so(tmp_path):
    out = run_accmon("run", "--headless", "--record", str(tmp_path / "r.accmon"), "--", sys.executable, "-c", "pass")
    assert out.returncode == 0
    assert "ended before a run could be watched" in out.stderr and "r.accmon was not written" in out.stderr


def test_a_run_over_before_the_viewer_attached_is_reported_from_its_recording(tmp_path, capsys):
    # The viewer polls for the run's registry entry; a run of a few fast steps can register and finish in
    # between. Its summary then comes from what it recorded (a real run, closed before anyone looked).
    from accmon.probe.run import Run
    from accmon.tui.runner import _say_what_was_recorded

    rec = tmp_path / "fast.accmon"
    run = Run("fast", record=str(rec))
    for step in range(10):
        run.log(step, loss=1.0 / (step + 1))
    run.close()
    _say_what_was_recorded(str(rec))
    err = capsys.readouterr().err
    assert "run finished: 10 steps recorded (steps 0 to 9)" in err and "before the viewer attached" in err


def test_help_ls_and_check_load_no_tui(tmp_path):
    # cli.py imports at the top what every command needs; textual, rich and the app load only when a TUI opens.
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from accmon.tui import cli
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for argv in (["--help"], ["ls"], ["check", {str(tmp_path / "missing.accmon")!r}]):
                try:
                    cli.main(argv)
                except SystemExit:
                    pass
        print(",".join(sorted(m for m in ("textual", "rich", "accmon.tui.app") if m in sys.modules)))
        """
    )
    env = {**os.environ, "ACCMON_RUNTIME_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the command line loaded {out.stdout.strip()}"
