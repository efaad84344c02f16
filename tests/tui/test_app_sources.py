"""The app's live source over real sockets: a real probe `Run` in this process, found through the registry."""

from __future__ import annotations

import asyncio
import time

from accmon.probe import registry
from accmon.probe.recording import RecordingReader
from accmon.probe.run import Run
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import LiveSource, QueueSource
from accmon.tui.store import RunStore


def pump(source: LiveSource, store: RunStore, until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store.ingest(source.drain())
        if until():
            return
        source.wake.wait(0.05)
    raise AssertionError(f"timed out; source status {source.status}")


def test_live_source_follows_a_run_and_records_what_it_receives(tmp_path):
    run = Run("src-test", rules=False)
    for step in range(300):
        run.log(step, loss=1.0 / (step + 1), acc=step / 300)
    entries = registry.find_run("src-test")
    assert entries
    source = LiveSource(entries, record=str(tmp_path / "viewer.accmon"))
    store = RunStore()
    source.start()
    try:
        pump(source, store, lambda: store.rank(0).axis.last == 299 and source.status.state == "live")  # history first
        for step in range(300, 400):
            run.log(step, loss=0.0, acc=1.0)
        pump(source, store, lambda: store.rank(0).axis.last == 399)  # then live, no gap
        assert store.rank(0).axis.n == 400
        run.close()
        pump(source, store, lambda: source.status.state == "ended")
        assert store.status() == "finished"
    finally:
        source.close()
        run.close()
    recorded = [f for f in RecordingReader(tmp_path / "viewer.accmon").frames() if f["kind"] == "steps"]
    assert sum(len(f["steps"]) for f in recorded) == 400


def test_live_source_re_attaches_when_the_run_restarts():
    first = Run("restarts", rules=False)
    first.log(0, loss=1.0)
    source = LiveSource(registry.find_run("restarts"))
    store = RunStore()
    source.start()
    try:
        pump(source, store, lambda: store.rank(0).axis.n == 1)
        first.close()
        pump(source, store, lambda: source.status.state == "ended")
        second = Run("restarts", rules=False)  # the job, started again: a new run of the same name
        try:
            for step in range(50):
                second.log(step, loss=2.0)
            pump(source, store, lambda: source.generation == 1)
            fresh = RunStore()
            pump(source, fresh, lambda: fresh.rank(0).axis.n == 50)
            assert fresh.run_id == second.run_id and "re-attached" in (source.status.message or "")
        finally:
            second.close()
    finally:
        source.close()


def test_the_app_on_a_real_run_shows_it_live_then_finished():
    run = Run("app-live", rules=False)
    for step in range(200):
        run.log(step, loss=1.0 / (step + 1), acc=step / 200)

    async def go():
        app = AccmonApp(LiveSource(registry.find_run("app-live")), refresh_s=0.05)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 20
            while app.store.rank(0).axis.n < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await pilot.pause()
            assert app.header_info().state == "live" and "app-live" in app.screen_text()
            run.close()
            while app.header_info().state != "finished" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert app.header_info().state == "finished"

    try:
        asyncio.run(go())
    finally:
        run.close()


def test_a_restart_ends_the_drain_before_the_new_runs_frames():
    # A consumer drains in a loop and looks at `generation` between loops (the app resets its store then). A restart
    # in the middle of a loop must not hand it the new run's first frames (its meta) for the old store: the drain
    # that meets the restart comes back empty, and only the next one takes the new run's frames.
    src = QueueSource()
    src.push({"kind": "steps", "n": 1})
    assert src.drain() == [{"kind": "steps", "n": 1}]
    src.push({"kind": "steps", "n": 2})  # the old run's, still queued at the restart: dropped with it
    src.restart()
    src.push({"kind": "meta", "n": 3})
    assert src.generation == 1
    assert src.drain() == []
    assert src.drain() == [{"kind": "meta", "n": 3}]
