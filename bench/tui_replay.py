"""Time to first frame for `accmon replay` of a 1 M-step recording (goal ≤ 1 s), and until the whole file is in.

Writes a recording of 1,000,000 steps × 10 series (frames of 2,000 steps, as the probe writes them), then opens it
the way `accmon replay FILE` does: a fresh interpreter runs `accmon.tui.app.run_replay` headless at 160×48 and
reports when the first frame with data was made (the charts show the run's first steps while the rest loads),
counted from the interpreter's start, so imports are included. The viewer process's CPU seconds are printed
beside the wall time: on a shared, loaded machine they are what the same work takes on an idle one. Rules re-run over the frames as the replay
reads them (today's diagnosis), as they do for users.

    .venv/bin/python bench/tui_replay.py [--steps 1000000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

from accmon.probe import wire
from accmon.probe.recording import RecordingWriter

PER_FRAME = 2000
NAMES = ["loss", "acc", "grad_norm", "lr", "val_loss", "val_acc", "epoch", "grad_norm/fc1", "grad_norm/fc2",
         "grad_norm/out"]

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    t_start = float(sys.argv[2])
    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import ReplaySource
    t_imported = time.time()

    async def main():
        app = AccmonApp(ReplaySource(sys.argv[1]))
        first = None
        async with app.run_test(size=(160, 48)) as pilot:
            while True:
                await asyncio.sleep(0.005)
                chart = app._main.query_one("#chart-loss")
                if first is None and chart._rendered is not None and not chart._rendered.empty:
                    first = time.time()  # the strips exist; the compositor paints them in this loop turn
                    first_cpu = time.process_time()
                if first is not None and app.source.status.loaded and not app.source._q.q:
                    app.sync_now()
                    break
            loaded = time.time()
            print(f"{t_imported - t_start:.3f} {first - t_start:.3f} {loaded - t_start:.3f} {app.store.rank(0).axis.n}"
                  f" {first_cpu:.3f} {time.process_time():.3f}")

    asyncio.run(main())
    """
)


def write(path: str, steps: int) -> None:
    rng = np.random.default_rng(0)
    w = RecordingWriter(path)
    w.write([wire.encode(wire.envelope("meta", "bench", 0, 1, -1, name="bench", host="h", pid=1, started=0.0))])
    for k in range(steps // PER_FRAME):
        s = np.arange(k * PER_FRAME, (k + 1) * PER_FRAME)
        cols = {n: rng.normal(1.0, 0.1, PER_FRAME).tolist() for n in NAMES}
        for n in ("val_loss", "val_acc"):
            cols[n] = [v if i % 500 == 499 else None for i, v in enumerate(cols[n])]
        f = wire.envelope("steps", "bench", 0, k + 2, int(s[-1]), steps=s.tolist(), times=(s * 0.01).tolist(), cols=cols)
        w.write([wire.encode(f)])
    w.write([wire.encode(wire.envelope("end", "bench", 0, steps // PER_FRAME + 2, steps - 1, status="finished",
                                       error=None, total_steps=steps))])
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", help="write the recording here (and reuse it when it exists)")
    args = ap.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), "bench.accmon")
    if not os.path.exists(path):
        write(path, args.steps)
    # As installed packages are: byte-compiled (this machine sets PYTHONDONTWRITEBYTECODE, so nothing else would be).
    import accmon.probe
    import accmon.tui

    for pkg in (accmon.probe, accmon.tui):
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(pkg.__file__)], check=False)
    size = os.path.getsize(path)
    print(f"recording: {args.steps:,} steps × {len(NAMES)} series, {size / 1e6:.0f} MB; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for _ in range(args.rounds):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", CHILD, path, repr(t0)], capture_output=True, text=True, timeout=600)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(1)
        imported, first, loaded, rows, first_cpu, loaded_cpu = out.stdout.split()
        print(f"  imports {float(imported):.2f} s · first frame with data {float(first):.2f} s "
              f"(CPU {float(first_cpu):.2f} s) · all {int(rows):,} steps in {float(loaded):.1f} s "
              f"(CPU {float(loaded_cpu):.1f} s), from the interpreter's start")


if __name__ == "__main__":
    main()
