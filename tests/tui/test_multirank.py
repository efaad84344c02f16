"""Several ranks under one `accmon run`: one run, one merged recording, and a rank that dies is named."""

import json
import sys
import textwrap

from tests.conftest import all_steps, read_frames, run_accmon, write_script

RANK = textwrap.dedent(
    """
    import os, signal, sys, time
    import accmon.probe as accmon
    rank = int(os.environ["RANK"])
    die_at = int(sys.argv[1])
    for step in range(500):
        accmon.log(step, loss=1.0 / (step + 1) * (1 + 0.01 * rank))
        if step == die_at and rank == 1:
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)
        if step % 50 == 0:
            time.sleep(0.01)
    """
)

# Starts ranks the way torchrun does: separate interpreters with RANK and WORLD_SIZE set.
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys
    procs = [subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]], env={**os.environ, "RANK": str(r),
             "LOCAL_RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)]
    sys.exit(max(abs(p.wait()) for p in procs))
    """
)


def launch(tmp_path, die_at: int):
    rank = write_script(tmp_path, "rank.py", RANK)
    launcher = write_script(tmp_path, "launch.py", LAUNCHER)
    rec = tmp_path / "r.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, launcher, rank, str(die_at))
    report = json.loads(run_accmon("check", str(rec), "--json").stdout)
    return out, rec, report


def test_two_ranks_make_one_run_and_one_recording(tmp_path):
    out, rec, report = launch(tmp_path, die_at=-1)
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.glob("r.rank*")), "per-rank parts are merged away"
    frames = read_frames(rec)
    assert len({f["run"] for f in frames}) == 1
    for rank in (0, 1):
        assert all_steps(frames, rank) == list(range(500))
        seqs = [f["seq"] for f in frames if f["rank"] == rank]
        assert seqs == list(range(1, len(seqs) + 1))
    run = report["run"]
    assert run["ranks"] == [0, 1] and run["status"] == "finished" and run["steps"] == 500
    assert run["rank_status"] == {"0": "finished", "1": "finished"}
    assert [a for a in report["alerts"] if a["id"].startswith("rank") or a["id"] == "straggler_rank"] == []


def test_a_killed_rank_is_named_and_the_others_frames_are_kept(tmp_path):
    out, rec, report = launch(tmp_path, die_at=200)
    assert out.returncode != 0
    frames = read_frames(rec)
    assert all_steps(frames, 0) == list(range(500))
    assert all_steps(frames, 1) == list(range(201))
    run = report["run"]
    assert run["status"] == "crashed" and "rank 1 stopped" in run["error"]
    assert run["rank_status"]["1"] == "stopped" and run["rank_status"]["0"] == "finished"
    (stopped,) = [a for a in report["alerts"] if a["id"] == "rank_stopped"]
    assert stopped["rank"] == 1 and stopped["severity"] == "critical" and stopped["evidence"]["last_step"] == 200
