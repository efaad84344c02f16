"""Issue 7 load: N simulated ranks, each logging R steps/s of M metrics, with a headless viewer recording.

    .venv/bin/python bench/load.py                       # 8 ranks × 10,000 steps/s × 30 metrics for 600 s
    .venv/bin/python bench/load.py --seconds 60          # a shorter run

Prints: steps logged per rank, frames in each rank's own recording, frames the viewer received and recorded
(history repairs included), live frames the probes could not send (repaired from their logs), and the
viewer's and probes' memory over time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ACCMON_RUNTIME_DIR", tempfile.mkdtemp(prefix="aml", dir="/tmp"))

from accmon.probe import registry  # noqa: E402
from accmon.probe.recording import RecordingReader  # noqa: E402
from accmon.tui.headless import HeadlessViewer  # noqa: E402

RANK = textwrap.dedent(
    """
    import os, sys, time
    import accmon.probe as accmon
    rate, seconds, metrics = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    names = [f"m{i}" for i in range(metrics)]
    run = accmon.start("load", record=sys.argv[4])
    log = run.log
    t0 = time.perf_counter()
    step = 0
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while step < due:
            log(step, **dict.fromkeys(names, step * 0.5))
            step += 1
        time.sleep(0.001)
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    run.close()
    print(step, rss, run.dropped, run.dropped_live, flush=True)
    """
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--rate", type=float, default=10_000, help="steps per second per rank")
    ap.add_argument("--metrics", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=600)
    args = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="accmon-load-")
    run_id = registry.new_run_id()
    env = {**os.environ, "ACCMON_RUN_ID": run_id, "WORLD_SIZE": str(args.ranks)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RANK, str(args.rate), str(args.seconds), str(args.metrics),
                          os.path.join(out_dir, "run.accmon")], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True)
        for r in range(args.ranks)
    ]
    while len([e for e in registry.list_runs() if e.run_id == run_id]) < args.ranks:
        time.sleep(0.05)
    entries = sorted((e for e in registry.list_runs() if e.run_id == run_id), key=lambda e: e.rank)
    viewer = HeadlessViewer(entries, record=os.path.join(out_dir, "viewer.accmon"), quiet=True)
    samples = []
    t0 = time.monotonic()
    last_sample = 0.0
    while len(viewer.ended) < args.ranks:
        viewer.pump()
        now = time.monotonic() - t0
        if now - last_sample >= max(1.0, args.seconds / 20):
            last_sample = now
            samples.append((now, rss_mb(os.getpid())))
        time.sleep(0.01)
    viewer.close()
    results = [p.communicate()[0].split() for p in procs]
    print("viewer RSS over time (s: MB): " + ", ".join(f"{t:.0f}: {m:.0f}" for t, m in samples), flush=True)
    logged = [int(r[0]) for r in results]
    per_rank_frames = []
    for r in range(args.ranks):
        reader = RecordingReader(os.path.join(out_dir, f"run.rank{r}.accmon"))
        per_rank_frames.append(sum(1 for _ in reader.frames()))
    # Counted as they stream past: 10 minutes of 8 ranks is ~50 M decoded steps, far more than memory holds.
    viewer_frames = viewer_steps = 0
    for f in RecordingReader(os.path.join(out_dir, "viewer.accmon")).frames():
        viewer_frames += 1
        if f["kind"] == "steps":
            viewer_steps += len(f["steps"])
    dropped_live = sum(c.status.dropped_live for c in viewer.clients)
    gaps = sum(c.status.gaps_repaired for c in viewer.clients)
    print(f"{args.ranks} ranks × {args.rate:,.0f} steps/s × {args.metrics} metrics for {args.seconds:.0f} s")
    print(f"steps logged: {sum(logged):,} ({sum(logged) / args.seconds:,.0f}/s in all); "
          f"inbox drops in the probes: {sum(int(r[2]) for r in results)}")
    print(f"frames in the ranks' own recordings: {sum(per_rank_frames):,}; frames the viewer recorded: "
          f"{viewer_frames:,} ({viewer_steps:,} steps) — {'every frame' if viewer_frames == sum(per_rank_frames) else 'MISMATCH'}")
    print(f"live frames the probes could not send (repaired from history): {dropped_live}; gap repairs: {gaps}")
    print(f"probe RSS at the end, per rank: {', '.join(f'{int(r[1]) / 2**20:.0f}' for r in results)} MB")


if __name__ == "__main__":
    main()
