"""The viewer's stop key (issue 18 item 2): the real app, driven by Pilot, on a real training process found in the
registry; `S` asks, `y` confirms, and the training stops at its next step, by "viewer", its Ctrl-C save path run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from accmon.probe import registry
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import LiveSource
from accmon.tui.remote import RemoteSource, open_remote
from accmon.tui.stop_screen import StopScreen
from tests.conftest import read_frames, write_script
from tests.sshd import sshd  # noqa: F401  (the fixture)

pytest.importorskip("torch")

SCRIPT = textwrap.dedent(
    """
    import os, time
    import torch
    from torch import nn, optim
    import accmon.probe as accmon

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    out = os.environ["OUT"]
    accmon.watch(model, opt, name="stop-key", record=os.path.join(out, "run.accmon"))
    step = -1
    try:
        for step in range(100000):
            x = torch.randn(32, 8)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long()).backward()
            opt.step()
            time.sleep(0.002)
    except KeyboardInterrupt as exc:
        torch.save(model.state_dict(), os.path.join(out, "last.pt"))
        with open(os.path.join(out, "stopped.txt"), "w") as fh:
            fh.write(f"{step} {type(exc).__name__}")
    """
)


def _start(tmp_path):
    script = write_script(tmp_path, "train.py", SCRIPT)
    log = open(tmp_path / "train.log", "wb")  # a file, not a pipe nobody reads while the app runs
    proc = subprocess.Popen([sys.executable, script], env={**os.environ, "OUT": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while not registry.find_run("stop-key") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, log, deadline


def _stopped_by_the_viewer(tmp_path):
    step, kind = (tmp_path / "stopped.txt").read_text().split()
    assert kind == "StopTraining" and (tmp_path / "last.pt").exists()
    end = next(f for f in read_frames(tmp_path / "run.accmon") if f["kind"] == "end")
    assert end["status"] == "finished"
    assert end["stopped"]["by"] == "viewer" and end["stopped"]["step"] == int(step)


def test_the_stop_key_stops_a_real_training_process(tmp_path):
    proc, log, deadline = _start(tmp_path)
    try:
        entries = registry.find_run("stop-key")
        assert entries, (tmp_path / "train.log").read_text()[-2000:]

        async def go():
            app = AccmonApp(LiveSource(entries), refresh_s=0.05)
            app.animation_level = "none"
            async with app.run_test(size=(120, 40)) as pilot:
                while (0 not in app.store.ranks or app.store.rank(0).axis.n < 20) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await pilot.press("S")
                assert isinstance(app.screen, StopScreen)
                assert "Stop stop-key at its next training step?" in app.screen_text()
                await pilot.press("n")  # cancelled: nothing is asked
                assert not isinstance(app.screen, StopScreen) and proc.poll() is None
                await pilot.press("S")
                await pilot.press("y")
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                while not any("stops at its next step" in n for n in app.notes) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert any("stops at its next step" in n for n in app.notes), app.notes
                while app.header_info().state != "finished" and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await pilot.pause()
                assert "stopped by the viewer" in app.screen_text()

        asyncio.run(go())
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    _stopped_by_the_viewer(tmp_path)


def test_a_viewer_over_ssh_may_stop_the_run(sshd, tmp_path):  # noqa: F811 (the fixture)
    # The TUI's source for `accmon attach ssh://…`: the request goes through the ssh forward to the run's ipc
    # control socket, where the ssh user is the run's own user.
    proc, log, deadline = _start(tmp_path)
    source = None
    try:
        assert registry.find_run("stop-key"), (tmp_path / "train.log").read_text()[-2000:]
        source = RemoteSource(None, [], remote=open_remote(sshd.target(), run="stop-key"))
        source.start()
        while not any(f["kind"] == "steps" for f in source.drain()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.request_stop("test") == 1
        assert proc.wait(60) == 0
        while not any(source.stop_replies()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r and r["ok"] for r in source.stop_replies()] == [True], source.stop_replies()
    finally:
        if source is not None:
            source.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    _stopped_by_the_viewer(tmp_path)
