"""One run outcome (issue 17 item 3): the viewer's store and `check` answer "finished, crashed, truncated or running?"
with one function, `run_outcome`, so the same frames get the same answer from both."""

from __future__ import annotations

import os
import time

import pytest

from accmon.probe import registry, wire
from accmon.tui.check import summarize
from accmon.tui.store import RunStore, run_outcome

RUN = "0101000000-0c0e11"


def meta(rank: int, world: int = 1) -> dict:
    return wire.envelope("meta", RUN, rank, 1, -1, name="r", world_size=world)


def steps(rank: int, first: int, n: int, t: float) -> dict:
    f = wire.envelope("steps", RUN, rank, 2, first + n - 1, steps=list(range(first, first + n)),
                      times=[t] * n, cols={"loss": [1.0] * n})
    f["t"] = t
    return f


def end(rank: int, total: int, t: float, status: str = "finished", **kw) -> dict:
    f = wire.envelope("end", RUN, rank, 3, total - 1, status=status, error=kw.pop("error", None), total_steps=total, **kw)
    f["t"] = t
    return f


def exit_(rank: int, code: int | None = 0, sig: str | None = None) -> dict:
    return wire.envelope("exit", RUN, rank, 4, -1, exit_code=code, signal=sig)


def both(frames: list[dict]) -> tuple[dict, dict]:
    """What check and the store say of the same frames."""
    summary, _ = summarize(iter(frames))
    store = RunStore()
    store.ingest(frames)
    o = store.outcome()
    seen = {"status": summary.status, "error": summary.error, "stopped": summary.stopped,
            "ranks": summary.rank_status, "exit_code": summary.exit_code}
    return seen, {"status": o.status, "error": o.error, "stopped": o.stopped, "ranks": o.ranks, "exit_code": o.exit_code}


STOP = {"by": "user", "reason": "KeyboardInterrupt", "step": 9}
ENDED = {
    "finished": ([meta(0), steps(0, 0, 10, 1.0), end(0, 10, 1.0)],
                 {"status": "finished", "error": None, "ranks": {0: "finished"}}),
    "crashed end": ([meta(0), steps(0, 0, 10, 1.0), end(0, 10, 1.0, status="crashed", error="RuntimeError: boom")],
                    {"status": "crashed", "error": "RuntimeError: boom"}),
    "killed, no end": ([meta(0), steps(0, 0, 10, 1.0), exit_(0, None, "SIGKILL")],
                       {"status": "crashed", "error": "killed by SIGKILL", "ranks": {0: "stopped"}}),
    "cut short": ([meta(0), steps(0, 0, 10, 1.0), exit_(0, 0)], {"status": "truncated", "error": None}),
    "steps lost": ([meta(0), steps(0, 0, 10, 1.0), end(0, 30, 1.0, dropped_steps=20)], {"status": "truncated"}),
    "ctrl-c": ([meta(0), steps(0, 0, 10, 1.0), end(0, 10, 1.0, stopped=STOP), exit_(0, None, "SIGINT")],
               {"status": "finished", "error": None, "stopped": STOP, "exit_code": None}),
    "two ranks": ([meta(0, 2), meta(1, 2), steps(0, 0, 10, 1.0), steps(1, 0, 10, 1.0), end(0, 10, 1.0),
                   end(1, 10, 1.0), exit_(0), exit_(1)],
                  {"status": "finished", "ranks": {0: "finished", 1: "finished"}, "exit_code": 0}),
    "a rank killed": ([meta(0, 2), meta(1, 2), steps(0, 0, 10, 2.0), steps(1, 0, 5, 1.0), end(0, 10, 2.0),
                       exit_(0, 1), exit_(1, 1)],
                      {"status": "crashed", "error": "rank 1 stopped without an end frame (killed?); exit code 1",
                       "ranks": {0: "finished", 1: "stopped"}}),
    "every rank killed": ([meta(0, 2), meta(1, 2), steps(0, 0, 10, 2.0), steps(1, 0, 5, 1.0),
                           exit_(0, None, "SIGKILL"), exit_(1, None, "SIGKILL")],
                          {"status": "crashed", "ranks": {0: "stopped", 1: "stopped"},
                           "error": "rank 1 stopped first, at step 4, without an end frame (killed?); the other ranks "
                                    "stopped after it; killed by SIGKILL"}),
}


@pytest.mark.parametrize("case", list(ENDED))
def test_check_and_the_store_say_the_same_of_an_ended_run(case):
    frames, want = ENDED[case]
    by_check, by_store = both(frames)
    assert by_check == by_store
    assert {k: by_check[k] for k in want} == want


def test_a_rank_without_an_end_frame_after_the_command_exited_is_a_crash_in_the_viewer_too():
    # Before: the store said "finished" (the command's exit frame ended the run, exit code 0) where check said
    # "crashed" naming the rank; a rank that vanished without its end frame is what the header must say.
    frames = [meta(0, 2), meta(1, 2), steps(0, 0, 10, 2.0), steps(1, 0, 5, 1.0), end(0, 10, 2.0), exit_(0, 0)]
    store = RunStore()
    store.ingest(frames)
    assert store.status() == "crashed"
    assert store.error() == "rank 1 stopped without an end frame (killed?)"
    assert summarize(iter(frames))[0].error == store.error()


def test_a_live_multi_rank_run_is_running_for_check_not_crashed():
    # Before: check of a recording still being written by two ranks said "crashed" ("rank 0 stopped first …")
    # although the registry listed the run, and a rank that ended first made the still-running one "stopped".
    pub, ctl = registry.socket_paths(RUN, 0)
    registry.register(registry.RunEntry(run_id=RUN, rank=0, name="r", host=registry.host_name(), pid=os.getpid(),
                                        started=time.time(), cmd=["python"], pub=f"ipc://{pub}", ctl=f"ipc://{ctl}"))
    live = [meta(0, 2), meta(1, 2), steps(0, 0, 10, 1.0), steps(1, 0, 10, 1.0)]
    summary, _ = summarize(iter(live))
    assert summary.status == "running" and summary.error is None
    assert summary.rank_status == {0: "running", 1: "running"}
    one_done = [*live, end(0, 10, 1.0)]
    summary, _ = summarize(iter(one_done))
    assert summary.status == "running" and summary.rank_status == {0: "finished", 1: "running"}
    store = RunStore()
    store.ingest(one_done)
    assert store.status() is None and store.outcome().ranks == summary.rank_status


def test_the_registry_is_asked_only_when_the_frames_leave_it_open():
    asked = []

    def running() -> bool:
        asked.append(1)
        return True

    assert run_outcome([0], [{"rank": 0, "status": "finished"}], [], running=running).status == "finished"
    assert run_outcome([0], [], [{"rank": 0, "exit_code": 0}], running=running).status == "truncated"
    assert not asked
    assert run_outcome([0], [], [], running=running).status == "running" and asked


def test_nothing_heard_yet_is_running_not_cut_short():
    assert RunStore().status() is None and RunStore().outcome().status == "running"
    assert run_outcome([], [], [], running=lambda: True).status == "running"
    assert run_outcome([], [], []).status == "truncated"  # check of a file with no rank's frame, the run not live


HEADLESS_WORDS = {"finished": "run finished", "crashed": "run crashed (", "truncated": "run ended incomplete"}


# The cases the end frames decide: the headless viewer of `accmon run` stops before the launcher's exit frame.
HEADLESS_CASES = {c: frames for c, (frames, _) in ENDED.items() if any(f["kind"] == "end" for f in frames) and not any(
    f["kind"] == "exit" and (f.get("exit_code") or f.get("signal") not in (None, "SIGINT")) for f in frames)}
HEADLESS_CASES["an end status no probe sends"] = [meta(0), steps(0, 0, 10, 1.0), end(0, 10, 1.0, status="paused")]


@pytest.mark.parametrize("case", list(HEADLESS_CASES))
def test_the_headless_viewer_says_what_check_says_of_the_same_recording(case, tmp_path):
    # Before: the headless viewer worded the end itself, and an end frame whose status was not "finished" (a
    # hostile peer's) made it "crashed" where check and the header said "finished". It now asks run_outcome too.
    import io

    from accmon.tui.headless import say_recorded
    from tests.tui.test_app_fixtures import write_recording

    frames = HEADLESS_CASES[case]
    by_check, _ = both(frames)
    out = io.StringIO()
    say_recorded(write_recording(tmp_path / "run.accmon", frames), out)
    last = out.getvalue().splitlines()[-1]
    assert HEADLESS_WORDS[by_check["status"]] in last, (by_check, last)
    if by_check["error"]:
        assert by_check["error"] in last
    if by_check["stopped"]:
        assert "stopped by the user (Ctrl-C) at step 9" in last
