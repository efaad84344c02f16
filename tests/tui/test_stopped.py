"""A run the user stops with Ctrl-C is stopped, not crashed (issue 21 item 12): the end frame's `stopped`, check's
`run.stopped` and its text, the headless viewer's last line and the app's header say so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from tests.conftest import ACCMON, run_accmon, write_script
from tests.tui.test_app_fixtures import T0, frame, run, run_frames

LONG_LOOP = textwrap.dedent(
    """
    import sys, time
    import accmon.probe as accmon
    for step in range(1_000_000):
        accmon.log(step, loss=1.0 / (step + 1))
        if step == 50:
            print("ready", flush=True)
        time.sleep(0.002)
    """
)


def test_ctrl_c_of_a_headless_run_is_a_stop_by_the_user_not_a_crash(tmp_path):
    rec = tmp_path / "r.accmon"
    src = write_script(tmp_path, "train.py", LONG_LOOP)
    # Its own session, so that the SIGINT goes to the launcher and the training together, as a terminal's Ctrl-C
    # reaches its foreground process group; SIGINT at its default, as a shell starts a foreground command (an
    # ignored SIGINT would be inherited down to the script).
    proc = subprocess.Popen([*ACCMON, "run", "--headless", "--record", str(rec), "--", sys.executable, src],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert "KeyboardInterrupt" in err  # the script's own traceback still shows
    assert "run finished, stopped by the user (Ctrl-C) at step" in err, err
    assert "crashed" not in err

    out = run_accmon("check", str(rec), "--json")
    report = json.loads(out.stdout)
    r = report["run"]
    assert r["status"] == "finished" and r["error"] is None, r
    assert r["stopped"] == {"by": "user", "reason": "KeyboardInterrupt", "step": r["last_step"]}
    assert r["last_step"] >= 50 and r["complete"] is True and r["steps_lost"] == 0
    assert out.returncode == 0  # clean: nothing fired, nothing lost, no crash

    human = run_accmon("check", str(rec))
    assert f"stopped by the user (Ctrl-C) at step {r['last_step']}" in human.stdout
    assert "error" not in human.stdout and "crashed" not in human.stdout, human.stdout


def test_a_run_that_was_not_stopped_says_stopped_null(tmp_path):
    src = write_script(tmp_path, "t.py", "import accmon.probe as a\nfor s in range(20):\n    a.log(s, loss=1.0)\n")
    rec = tmp_path / "r.accmon"
    assert run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, src).returncode == 0
    out = run_accmon("check", str(rec), "--json")
    assert json.loads(out.stdout)["run"]["stopped"] is None


def test_the_header_says_the_user_stopped_the_run():
    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import QueueSource

    frames = run_frames(300, ended=None)
    seq = max(f["seq"] for f in frames) + 1
    frames.append(frame("end", seq, 299, status="finished", error=None, total_steps=300,
                        stopped={"by": "user", "reason": "KeyboardInterrupt", "step": 299}))

    async def go():
        src = QueueSource()
        src.push(*frames)
        app = AccmonApp(src, clock=lambda: T0 + 20.0)
        app.animation_level = "none"
        async with app.run_test(size=(160, 48)) as pilot:
            app.sync_now()
            await pilot.pause()
            text = app.screen_text()
            assert "stopped by the user (Ctrl-C) at step 299" in text
            assert "crashed" not in text.splitlines()[0]
    run(go())


def test_a_keyboard_interrupt_passed_as_a_crash_is_the_users_stop(tmp_path):
    # A framework's `with` block (probe/torch's watch()) closes the run as crashed with the exception's text; a
    # KeyboardInterrupt there is still the user's Ctrl-C.
    from accmon.probe.run import Run
    from tests.conftest import read_frames

    rec = tmp_path / "r.accmon"
    r = Run("w", record=rec, rules=False)
    for s in range(30):
        r.log(s, loss=1.0)
    r.close("crashed", error="KeyboardInterrupt: ")
    end_frame = [f for f in read_frames(rec) if f["kind"] == "end"][-1]
    assert end_frame["status"] == "finished" and end_frame["error"] is None
    assert end_frame["stopped"] == {"by": "user", "reason": "KeyboardInterrupt", "step": 29}

    rec2 = tmp_path / "r2.accmon"
    r2 = Run("w", record=rec2, rules=False)
    r2.log(0, loss=1.0)
    r2.close("crashed", error="RuntimeError: CUDA out of memory")
    end_frame = [f for f in read_frames(rec2) if f["kind"] == "end"][-1]
    assert end_frame["status"] == "crashed" and "stopped" not in end_frame
