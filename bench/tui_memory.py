"""Memory for 1 M steps × 50 series (goal ≤ 200 MB): the viewer process, app running, everything ingested.

Frames of 2,000 steps × 50 series are made one at a time (as they would arrive) and handed to the running app
(headless, 160×48, overview drawn); the figure is the process's resident memory once all are ingested and
drawn — interpreter, numpy, Textual, the app and the store together.

    .venv/bin/python bench/tui_memory.py [--steps 1000000] [--series 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource

import numpy as np

from accmon.probe import wire
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource

PER_FRAME = 2000


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def run(steps: int, series: int) -> None:
    names = ["loss", "acc", "grad_norm", "lr", "val_loss"] + [f"grad_norm/layer{i}" for i in range(series - 5)]
    base = rss_mb()
    src = QueueSource()
    app = AccmonApp(src, refresh_s=0.2)
    app.animation_level = "none"
    rng = np.random.default_rng(0)
    async with app.run_test(size=(160, 48)) as pilot:
        src.push(wire.envelope("meta", "bench", 0, 1, -1, name="bench", host="h", pid=1, started=0.0))
        await pilot.pause()
        idle = rss_mb()
        for k in range(steps // PER_FRAME):
            s = np.arange(k * PER_FRAME, (k + 1) * PER_FRAME)
            cols = {n: (rng.normal(1.0, 0.1, PER_FRAME) * np.exp(-s / steps)).tolist() for n in names}
            cols["val_loss"] = [v if i % 500 == 499 else None for i, v in enumerate(cols["val_loss"])]
            src.push(wire.envelope("steps", "bench", 0, k + 2, int(s[-1]), steps=s.tolist(), times=(s * 0.01).tolist(),
                                   cols=cols))
            if k % 2 == 1:  # at most two frames in flight, as a live stream delivers them
                while src._q.q:
                    await asyncio.sleep(0.01)
        while app.store.rank(0).axis.n < steps:
            await asyncio.sleep(0.05)
        app.sync_now()
        await pilot.pause()
        gc.collect()
        full = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data = app.store.rank(0)
        print(f"{data.axis.n:,} steps × {len(data.columns)} series ingested and drawn")
        print(f"  resident memory: {full:.0f} MB (peak {peak:.0f} MB); before the app {base:.0f} MB, app idle {idle:.0f} MB;"
              f" the store's share {full - idle:.0f} MB = {(full - idle) * 2**20 / (data.axis.n * len(data.columns)):.2f}"
              f" bytes per value")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--series", type=int, default=50)
    args = ap.parse_args()
    asyncio.run(run(args.steps, args.series))


if __name__ == "__main__":
    main()
