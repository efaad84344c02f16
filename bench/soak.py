"""Issue 7 soak: one long run; a viewer detaches and re-attaches every few minutes.

    .venv/bin/python bench/soak.py                          # 1 hour, re-attach every 3 minutes
    .venv/bin/python bench/soak.py --seconds 300 --every 30

Each attach must receive the whole history then the live stream with no gap; the probe's memory and open
file descriptors must not grow with the number of attaches.
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
os.environ.setdefault("ACCMON_RUNTIME_DIR", tempfile.mkdtemp(prefix="ams", dir="/tmp"))

from accmon.probe import registry  # noqa: E402
from accmon.tui.subscriber import RunClient  # noqa: E402

TRAIN = textwrap.dedent(
    """
    import sys, time
    import accmon.probe as accmon
    run = accmon.start("soak", record=sys.argv[2])
    print(run.run_id, flush=True)
    t0 = time.perf_counter()
    step = 0
    while time.perf_counter() - t0 < float(sys.argv[1]):
        for _ in range(10):
            accmon.log(step, loss=1.0 / (step + 1), acc=0.5, lr=0.1, grad_norm=1.0)
            step += 1
        time.sleep(0.001)
    """
)


def probe_resources(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def attach_once(entry: registry.RunEntry, watch_s: float, max_catch_up_s: float = 600) -> tuple[int, bool, float]:
    """Attach, receive the whole history, stay `watch_s` seconds live, detach: (steps received, contiguous from
    0, seconds to catch up; NaN when the history did not arrive within `max_catch_up_s`)."""
    client = RunClient(entry.pub, entry.ctl).start()
    t0 = time.monotonic()
    steps: list[int] = []
    caught_up = None
    while time.monotonic() - t0 < (watch_s + caught_up if caught_up is not None else max_catch_up_s):
        client.wake.wait(0.2)
        for f in client.drain():
            if f["kind"] == "steps":
                steps.extend(f["steps"])
        st = client.status
        if caught_up is None and st.state == "live" and st.last_seq >= st.head_seq:
            caught_up = time.monotonic() - t0
    client.close()
    return len(steps), steps == list(range(len(steps))), caught_up or float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--every", type=float, default=180, help="seconds between re-attaches")
    ap.add_argument("--watch", type=float, default=10, help="seconds each attach stays live once caught up")
    args = ap.parse_args()
    rec = os.path.join(tempfile.mkdtemp(prefix="accmon-soak-"), "soak.accmon")
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(args.seconds), rec], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    (entry,) = [e for e in registry.list_runs() if e.run_id == run_id]
    t0 = time.monotonic()
    rows = []
    while proc.poll() is None and time.monotonic() - t0 < args.seconds - args.every:
        started = time.monotonic()
        rss, fds = probe_resources(proc.pid)
        n, contiguous, catch_up = attach_once(entry, args.watch)
        rss_after, fds_after = probe_resources(proc.pid)
        rows.append((time.monotonic() - t0, n, contiguous, catch_up, rss, fds, rss_after, fds_after))
        print(f"t={rows[-1][0]:6.0f}s attach: {n:,} steps, no gap: {contiguous}, caught up in {catch_up:.2f} s; "
              f"probe RSS {rss:.0f}→{rss_after:.0f} MB, fds {fds}→{fds_after}", flush=True)
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))
    proc.wait()
    print(f"{len(rows)} attaches, all without a gap: {all(r[2] for r in rows)}; probe RSS first/last "
          f"{rows[0][4]:.0f}/{rows[-1][6]:.0f} MB; fds first/last {rows[0][5]}/{rows[-1][7]}")


if __name__ == "__main__":
    main()
