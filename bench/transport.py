"""Issue 2 figures: cost of log() on the training thread, throughput to a viewer and to disk, what an idle run
costs, late-join time.

    .venv/bin/python bench/transport.py

Medians of repeated rounds; the machine is shared and noisy, so compare figures from one run only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("ACCMON_RUNTIME_DIR", tempfile.mkdtemp(prefix="amb", dir="/tmp"))

import accmon.probe as accmon  # noqa: E402
from accmon.tui.subscriber import RunClient  # noqa: E402

SCALARS = {f"m{i}": float(i) for i in range(10)}


def bench_log_call(rounds: int = 7, n: int = 200_000) -> tuple[float, float]:
    """Median ns per log() of 10 scalars, and of an empty Python call for reference, interleaved."""
    run = accmon.start("bench-log")
    per_log, per_noop = [], []

    def noop(step=None, **kw):
        return None

    for _ in range(rounds):
        t = time.perf_counter_ns()
        for step in range(n):
            noop(step, m0=0.0, m1=1.0, m2=2.0, m3=3.0, m4=4.0, m5=5.0, m6=6.0, m7=7.0, m8=8.0, m9=9.0)
        per_noop.append((time.perf_counter_ns() - t) / n)
        t = time.perf_counter_ns()
        for step in range(n):
            run.log(step, m0=0.0, m1=1.0, m2=2.0, m3=3.0, m4=4.0, m5=5.0, m6=6.0, m7=7.0, m8=8.0, m9=9.0)
        per_log.append((time.perf_counter_ns() - t) / n)
        time.sleep(0.5)  # let the I/O thread drain between rounds
    run.close()
    return statistics.median(per_log), statistics.median(per_noop)


VIEWER = """
import sys, time
from accmon.tui.subscriber import RunClient
client = RunClient(sys.argv[1], sys.argv[2]).start()
received, first = 0, None
while client.status.state != "ended" or client._queue:
    client.wake.wait(1.0)
    for f in client.drain():
        if f["kind"] == "steps":
            first = first or time.perf_counter()
            received += len(f["steps"])
print(received, time.perf_counter() - first, flush=True)
"""


def bench_throughput(steps: int = 4_000_000, batch: int = 2000, viewer: bool = False) -> dict[str, float]:
    """Steps/s from log_columns() (batched) into a recording, and with a viewer in another process.

    Without a viewer, the time to close() is the probe's own cost (encode, record, publish). With one,
    close() waits for the viewer to hold the end frame, so the figure is the whole pipeline's.
    """
    rec = os.path.join(tempfile.mkdtemp(), "b.accmon")
    run = accmon.start("bench-tp", record=rec)
    proc = None
    if viewer:
        proc = subprocess.Popen([sys.executable, "-c", VIEWER, *run.endpoints], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
    cols = {k: [v] * batch for k, v in SCALARS.items()}
    t0 = time.perf_counter()
    for start in range(0, steps, batch):
        run.log_columns(list(range(start, start + batch)), cols)
    run.close()
    elapsed = time.perf_counter() - t0
    out = {"steps_per_s": steps / elapsed, "bytes_per_step": os.path.getsize(rec) / steps}
    if proc is not None:
        received, viewer_s = proc.communicate(timeout=300)[0].split()
        out.update(received=int(received), viewer_steps_per_s=int(received) / float(viewer_s))
    os.unlink(rec)
    return out


def bench_late_join(steps: int = 1_000_000, record: bool = True) -> float:
    """Seconds for a viewer attaching to a run of `steps` steps to hold all of them."""
    rec = os.path.join(tempfile.mkdtemp(), "lj.accmon") if record else None
    run = accmon.start("bench-lj", record=rec)
    batch = 1000
    cols = {k: [v] * batch for k, v in SCALARS.items()}
    for start in range(0, steps, batch):
        run.log_columns(list(range(start, start + batch)), cols)
    while run._inbox:
        time.sleep(0.05)
    time.sleep(0.2)
    t0 = time.perf_counter()
    client = RunClient(*run.endpoints).start()
    received = 0
    while received < steps:
        client.wake.wait(1.0)
        received += sum(len(f["steps"]) for f in client.drain() if f["kind"] == "steps")
    elapsed = time.perf_counter() - t0
    client.close()
    run.close()
    if rec:
        os.unlink(rec)
    return elapsed


def bench_idle(seconds: float = 5.0) -> float:
    """CPU milliseconds per second that the I/O thread of a recording run with nothing to send spends waking up
    (Linux: the thread's own on-CPU time from /proc). A training process using every core pays this too."""
    rec = os.path.join(tempfile.mkdtemp(), "idle.accmon")
    run = accmon.start("bench-idle", record=rec)
    path = f"/proc/self/task/{run._io.native_id}/schedstat"

    def on_cpu_ns() -> int:
        with open(path) as f:
            return int(f.read().split()[0])

    time.sleep(1.0)  # set-up (rules, sockets, registry) is not idling
    c0, t0 = on_cpu_ns(), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = on_cpu_ns(), time.perf_counter()
    run.close()
    os.unlink(rec)
    return (c1 - c0) / 1e6 / (t1 - t0)


def main() -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    log_ns, noop_ns = bench_log_call()
    print(f"log() of 10 scalars: median {log_ns / 1000:.2f} µs per call "
          f"(an empty Python call with the same arguments: {noop_ns / 1000:.2f} µs)")
    alone = [bench_throughput()["steps_per_s"] for _ in range(3)]
    print(f"batched (log_columns of 2000 steps × 10 scalars), encoded + recorded + published, no viewer: "
          f"median {statistics.median(alone) / 1e6:.2f} M steps/s")
    tp = bench_throughput(viewer=True)
    print(f"  the same with a viewer in another process: {tp['steps_per_s'] / 1e6:.2f} M steps/s end to end; the viewer "
          f"decoded {tp['received']:,} steps at {tp['viewer_steps_per_s'] / 1e6:.2f} M steps/s; "
          f"{tp['bytes_per_step']:.0f} bytes/step on disk")
    print(f"an idle run's I/O thread: {bench_idle():.2f} ms of CPU per second")
    for rec in (True, False):
        t = statistics.median(bench_late_join(record=rec) for _ in range(3))
        print(f"late join, 1 M steps of 10 scalars, history from {'the recording' if rec else 'memory'}: "
              f"median {t:.2f} s until the viewer holds every step")


if __name__ == "__main__":
    main()
