"""`--on-alert CMD` (issue 18 item 3): the user's command runs for each new alert, in the viewer, with the alert
on stdin and in its environment; it never blocks, is rate-limited, and says when it fails. Real commands, a real
`accmon run --headless` of a run that goes NaN."""

from __future__ import annotations

import json
import os
import sys
import time

from accmon.tui.on_alert import QUEUE, AlertCommand
from tests.conftest import run_accmon, write_script


def alert(i: int = 0, *, aid: str = "nan_loss", severity: str = "critical", state: str = "active") -> dict:
    return {"id": aid, "cause": f"c{i}", "severity": severity, "step": 10 + i, "message": f"loss is NaN\x1b[2J {i}",
            "evidence": {"loss": float("nan")}, "fix": "lower the lr", "state": state}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a guard against a hang only: each wait ends on its event
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_command_gets_the_alert_on_stdin_and_in_its_environment(tmp_path):
    out = tmp_path / "got"
    said: list[str] = []
    cmd = f'cat > "{out}.json"; env | grep ^ACCMON_ > "{out}.env"'
    ac = AlertCommand(cmd, run_name="mnist", say=said.append)
    try:
        ac.offer(alert(), rank=1)
        ac.offer(alert(), rank=1)  # the same alert again (an update): told once
        ac.offer(alert(1, severity="info"))  # below the default severity
        ac.offer(alert(2, state="cleared"))  # not new
        wait_for(lambda: os.path.exists(f"{out}.env") and ac.counts["run"] == 1)
    finally:
        ac.close()
    body = json.loads(open(f"{out}.json").read())
    assert body["id"] == "nan_loss" and body["rank"] == 1 and body["run"] == "mnist"
    assert body["evidence"]["loss"] == "NaN"  # JSON has no NaN: said as a string
    env = dict(line.split("=", 1) for line in open(f"{out}.env").read().splitlines())
    assert env["ACCMON_ALERT_ID"] == "nan_loss" and env["ACCMON_ALERT_SEVERITY"] == "critical"
    assert env["ACCMON_ALERT_STEP"] == "10" and env["ACCMON_ALERT_RANK"] == "1" and env["ACCMON_RUN_NAME"] == "mnist"
    assert "\x1b" not in env["ACCMON_ALERT_MESSAGE"] and "\\x1b" in env["ACCMON_ALERT_MESSAGE"]
    assert ac.counts["run"] == 1 and not said


def test_a_slow_command_never_blocks_and_what_it_cannot_take_is_dropped_and_said(tmp_path):
    started = tmp_path / "started"
    said: list[str] = []
    ac = AlertCommand(f'touch "{started}"; sleep 30', say=said.append, timeout_s=60)
    try:
        for i in range(QUEUE + 5):
            ac.offer(alert(i))  # returns at once although the first command sleeps
        wait_for(started.exists)
        assert ac._proc is not None and ac._proc.poll() is None  # still running: nothing waited for it
        # QUEUE waiting, the rest dropped: 4 when the command's thread took the first alert off the queue before
        # the fifth-to-last offer, 5 when it took it after all the offers.
        assert ac.counts["dropped"] in (4, 5) and ac.counts["dropped"] + len(ac.queue) + 1 == QUEUE + 5
        assert any("dropped" in line for line in said)
    finally:
        ac.close(grace_s=0)  # the sleeping command is killed, the queue given up
    assert not ac._thread.is_alive()


def test_a_failing_command_is_said_once_and_a_hanging_one_is_killed(tmp_path):
    said: list[str] = []
    ac = AlertCommand('echo "no webhook" >&2; exit 3', say=said.append)
    try:
        for i in range(3):
            ac.offer(alert(i))
        wait_for(lambda: ac.counts["run"] == 3)
    finally:
        ac.close()
    assert ac.counts["failed"] == 3 and said == ["--on-alert: the command failed (exit 3): no webhook"]
    hung: list[str] = []
    ac = AlertCommand("sleep 30", say=hung.append, timeout_s=0.5)
    try:
        ac.offer(alert())
        wait_for(lambda: ac.counts["timed_out"] == 1)
    finally:
        ac.close()
    assert hung == ["--on-alert: the command ran past 0.5 s and was killed"]


def test_at_most_per_minute_commands_start_in_a_minute(tmp_path):
    said: list[str] = []
    ac = AlertCommand("true", say=said.append, per_minute=2)
    try:
        for i in range(5):
            ac.offer(alert(i))
        wait_for(lambda: ac.counts["run"] + ac.counts["rate_limited"] == 5)
    finally:
        ac.close()
    assert ac.counts["run"] == 2 and ac.counts["rate_limited"] == 3
    assert any("more than 2 alerts in a minute" in line for line in said)


def test_accmon_run_headless_runs_the_command_for_a_nan_run(tmp_path):
    script = write_script(tmp_path, "nan.py", (
        "import math, accmon.probe as ap\n"
        "for step in range(400):\n"
        "    ap.log(step, loss=float('nan') if step >= 100 else 1.0 / (step + 1))\n"))
    got = tmp_path / "alerts"
    got.mkdir()
    out = run_accmon("run", "--headless", "--on-alert", f'cat > "{got}/$ACCMON_ALERT_ID.json"', "--",
                     sys.executable, script, timeout=180)
    assert out.returncode == 0, out.stderr
    body = json.loads((got / "nan_loss.json").read_text())
    assert body["id"] == "nan_loss" and body["severity"] == "critical" and body["run"] == "nan"
    assert run_accmon("run", "--on-alert-severity", "bad", "--", "true").returncode == 2  # argparse: a clear error


def test_the_live_app_runs_the_command_once_for_each_new_alert(tmp_path):
    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import QueueSource
    from tests.tui.test_app_fixtures import T0, loaded, run, run_frames

    got = tmp_path / "told"
    ac = AlertCommand(f'cat >> "{got}"; echo >> "{got}"', say=lambda line: None)
    src = QueueSource()
    src.push(*run_frames(1500, ended=None))  # two alerts: lr_too_high (warning), vanishing_gradients (critical)

    async def go():
        app = AccmonApp(src, clock=lambda: T0 + 20.0, on_alert=ac)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(app, pilot)
            wait_for(lambda: ac.counts["run"] == 2)
    run(go())  # the app's unmount closes the command runner
    told = sorted(json.loads(line)["id"] for line in got.read_text().splitlines() if line.strip())
    assert told == ["lr_too_high", "vanishing_gradients"]
    assert not ac._thread.is_alive()
