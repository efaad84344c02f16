"""Frame time with 10 M points in a series (goal ≤ 30 ms): one full redraw of the overview at 160×48.

The store holds 10 M steps of loss, accuracy, gradient norm and learning rate (plus a validation loss every
1,000 steps). Each frame moves the view (so no chart can reuse its cached strips), recomputes every chart on the
screen, and has Textual compose the full screen into the segments it would write to the terminal. We time
both parts: accmon's (decimate + draw) and Textual's (compose the screen), as wall time and as the CPU time of
the UI thread (on a shared, loaded machine the CPU time is what the frame costs on an idle one).

    .venv/bin/python bench/tui_frame.py [--steps 10000000] [--ranks 1]

`--ranks N` (N > 1) fills N ranks with `--steps` steps each (per-rank offsets and noise, as DDP ranks differ) and
times the default multi-rank view: every chart draws the median across ranks over their min–max band, each
rank decimated from its own block summaries (`--steps 1000000 --ranks 8`: 8 M rows).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import time

import numpy as np
from rich.console import Console

from accmon.probe import wire
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import QueueSource
from accmon.tui.store import MISSING_BITS, Column

FRAMES = 40
CHUNK_ROWS = 1_000_000


def fill(app: AccmonApp, n: int, rank: int = 0) -> None:
    data = app.store.rank(rank)
    rng = np.random.default_rng(rank)
    scale = 1.0 + 0.05 * rank  # ranks see different batches: their losses differ a little
    cols = {name: data.columns.setdefault(name, Column(name)) for name in ("loss", "acc", "grad_norm", "lr", "val_loss")}
    for start in range(0, n, CHUNK_ROWS):
        s = np.arange(start, min(n, start + CHUNK_ROWS), dtype=np.int64)
        data.axis.append(s)
        loss = (scale * 2.3 * np.exp(-s / (n / 5)) + 0.05 * rng.normal(size=len(s))).astype(np.float32)
        cols["loss"].append(loss)
        cols["acc"].append((1 - np.exp(-s / (n / 4))).astype(np.float32))
        cols["grad_norm"].append(np.abs(rng.normal(1, 0.3, len(s))).astype(np.float32))
        cols["lr"].append(np.full(len(s), 1e-3, dtype=np.float32))
        val = (loss + 0.1).copy()
        val.view(np.uint32)[s % 1000 != 999] = MISSING_BITS
        cols["val_loss"].append(val)
    for c in cols.values():
        c.last_value = 1.0
    data.version += 1
    app.store.version += 1


async def run(n: int, ranks: int = 1) -> None:
    src = QueueSource()
    src.push(*(wire.envelope("meta", "bench", r, 1, -1, name="bench", host="h", pid=1, started=0.0,
                             world_size=ranks) for r in range(ranks)))
    app = AccmonApp(src, refresh_s=3600)
    app.animation_level = "none"
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        t = time.perf_counter()
        for r in range(ranks):
            fill(app, n, r)
        shown = "all ranks together (median + min–max band)" if ranks > 1 else "one rank"
        print(f"{ranks} rank{'s' if ranks > 1 else ''} × {n:,} steps × 5 series stored in "
              f"{time.perf_counter() - t:.1f} s; view: {shown}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        app.sync_now()
        await pilot.pause()
        console = Console(width=160, height=48, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                          legacy_windows=False)
        for label, setup in (("whole run", lambda i: setattr(app, "span", None)),
                             ("zoomed to 0.1 %, panning", lambda i: (setattr(app, "span", n / 1000),
                                                                    setattr(app, "follow", False),
                                                                    setattr(app, "x_end", n / 2 + i * 997))),
                             ("following the tail, 10 k window", lambda i: (setattr(app, "span", 10_000.0),
                                                                           setattr(app, "follow", True)))):
            ours, textual, cpu = [], [], []
            for i in range(FRAMES):
                setup(i)
                app.cursor = i  # a new view every frame: every chart recomputes
                c0 = time.thread_time()
                t0 = time.perf_counter()
                app._sync()  # what a timer tick does: only what changed is redrawn
                for chart in app._main.query("LineChart"):
                    if chart.display:
                        chart.rendered()
                t1 = time.perf_counter()
                update = app.screen._compositor.render_update(full=True)
                console.print(update)
                t2 = time.perf_counter()
                cpu.append(time.thread_time() - c0)
                ours.append(t1 - t0)
                textual.append(t2 - t1)
            total = [a + b for a, b in zip(ours, textual)]
            q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))] * 1e3  # noqa: E731
            print(f"  {label:<34} frame median {statistics.median(total) * 1e3:5.1f} ms, p95 {q(total, 0.95):5.1f} ms"
                  f"  (accmon {statistics.median(ours) * 1e3:4.1f} + Textual {statistics.median(textual) * 1e3:4.1f});"
                  f" CPU median {statistics.median(cpu) * 1e3:5.1f} ms, p95 {q(cpu, 0.95):5.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000_000, help="steps per rank")
    ap.add_argument("--ranks", type=int, default=1, help="ranks, each with --steps steps (default 1)")
    args = ap.parse_args()
    asyncio.run(run(args.steps, args.ranks))


if __name__ == "__main__":
    main()
