"""LiveRun, the one live engine behind the TUI's source, the headless printer and the remote source: driven by
hand from the test's thread, as the headless viewer drives it, over real probe runs found in the registry."""

from __future__ import annotations

import os
import time

from accmon.probe import registry
from accmon.probe.recording import RecordingReader
from accmon.probe.run import Run
from accmon.tui.live import LiveRun


def drive(live: LiveRun, until, got: list, timeout: float = 20.0) -> None:
    """Pump and tick until `until()`; every (rank, frame) received is appended to `got`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in live.pump():
            got += [(received.entry.rank, f) for f in received.frames]
        live.tick()
        if until():
            return
        live.wait(0.05)
    raise AssertionError(f"timed out; status {live.status}")


def steps_of(got: list, rank: int) -> set[int]:
    return {int(s) for r, f in got if r == rank and f["kind"] == "steps" for s in f["steps"]}


def test_a_live_run_finds_a_late_rank_records_both_raises_cross_rank_alerts_and_ends(tmp_path):
    said: list[str] = []
    got: list = []
    first = Run("late-rank", run_id="late-rank-1", rank=0, world_size=2, rules=False)
    second = None
    live = LiveRun(registry.find_run("late-rank-1"), record=str(tmp_path / "viewer.accmon"), on_event=said.append)
    live.start()
    try:
        for step in range(60):
            first.log(step, loss=1.0)
        drive(live, lambda: len(steps_of(got, 0)) == 60 and live.status.state == "live", got)
        assert live.status.ranks == 1
        # Rank 1 registers late (torchrun starts ranks in parallel): the run finds it, by (rank, pid).
        second = Run("late-rank", run_id="late-rank-1", rank=1, world_size=2, rules=False)
        for step in range(60):
            second.log(step, loss=10.0)  # ten times rank 0's loss over the same steps: a diverging rank
        drive(live, lambda: len(steps_of(got, 1)) == 60, got)
        assert said == [f"rank 1 joined (pid {os.getpid()})"] and live.status.ranks == 2
        # The cross-rank rules saw every frame of both ranks; their alert comes as an alert frame, after the
        # frame that raised it, as a probe's own alert would.
        drive(live, lambda: any(f["kind"] == "alert" for _, f in got), got)
        at = next(i for i, (_, f) in enumerate(got) if f["kind"] == "alert")
        alert = got[at][1]["alert"]
        assert (alert["id"], alert["rank"], got[at][1]["rank"]) == ("rank_diverging", 1, 1)
        assert any(f["kind"] == "steps" for _, f in got[:at])
        first.close()
        second.close()
        drive(live, lambda: live.status.state == "ended", got)
        assert not live.all_gone()  # ended with its end frames, not gone: this process lives
    finally:
        live.close()
        first.close()
        if second is not None:
            second.close()
    recorded: dict[int, set[int]] = {0: set(), 1: set()}
    for f in RecordingReader(tmp_path / "viewer.accmon").frames():
        if f["kind"] == "steps":
            recorded[f["rank"]] |= set(f["steps"])
    assert recorded == {0: set(range(60)), 1: set(range(60))}  # the very frames received, both ranks


def test_a_live_run_with_no_entries_waits_then_attaches_to_the_run_it_finds_again():
    """`accmon run`'s TUI: the source starts before the command's probe registers (find_again finds it)."""
    got: list = []
    found: list = []
    live = LiveRun([], find_again=lambda: found).start()
    run = Run("found-later", run_id="found-later-1", rules=False)
    try:
        live.tick()
        assert live.status.state == "connecting" and live.status.message == "waiting for the run"
        found += registry.find_run("found-later-1")
        run.log(0, loss=1.0)
        drive(live, lambda: steps_of(got, 0) == {0}, got)
        assert live.generation == 1 and live.run_id == "found-later-1" and live.name == "found-later"
    finally:
        live.close()
        run.close()
