"""Which chart widget meets "rendering cost follows the screen"? textual-plot and textual-plotext against ours.

Each draws one line chart filling a 160×48 terminal from N points, inside a running Textual app (headless), and
we time what one redraw costs after the data changed: textual-plot's `_render_plot` (data → braille canvas),
textual-plotext's `render` (plotext builds the chart), and accmon's `render_chart` (store → decimated braille
strips). N grows ×10 until a library takes longer than LIMIT_S for one frame.

    .venv/bin/pip install textual-plot textual-plotext     # only for this comparison
    .venv/bin/python bench/tui_chart_libs.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
from textual.app import App, ComposeResult

from accmon.tui.store import Column, RunStore
from accmon.tui.widgets.chart import ChartSpec, SeriesSpec, View, render_chart

SIZE = (160, 48)
LIMIT_S = 5.0  # one frame slower than this is far past any interactive use: stop growing N for that library
POINTS = [10**3, 10**4, 10**5, 10**6, 10**7]
REPEATS = 3


def series(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=np.float64)
    y = 2.3 * np.exp(-x / (n / 5)) + 0.05 * np.random.default_rng(0).normal(size=n)
    return x, y


def timed(fn) -> float:
    samples = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def bench_textual_plot() -> dict[int, float]:
    from textual_plot import HiResMode, PlotWidget

    class A(App):
        def compose(self) -> ComposeResult:
            yield PlotWidget()

    out: dict[int, float] = {}
    app = A()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        plot = app.query_one(PlotWidget)
        for n in POINTS:
            x, y = series(n)
            plot.clear()
            plot.plot(x, y, hires_mode=HiResMode.BRAILLE)
            await pilot.pause()
            out[n] = timed(plot._render_plot)
            if out[n] > LIMIT_S:
                break
    return out


async def bench_plotext() -> dict[int, float]:
    from textual_plotext import PlotextPlot

    class A(App):
        def compose(self) -> ComposeResult:
            yield PlotextPlot()

    out: dict[int, float] = {}
    app = A()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        w = app.query_one(PlotextPlot)
        for n in POINTS:
            x, y = series(n)
            w.plt.clear_data()
            w.plt.plot(x.tolist(), y.tolist(), marker="braille")  # plotext takes Python lists
            out[n] = timed(w.render)
            if out[n] > LIMIT_S:
                break
    return out


def bench_accmon() -> dict[int, float]:
    out: dict[int, float] = {}
    spec = ChartSpec("loss", (SeriesSpec("loss", "train", 0),))
    for n in POINTS:
        x, y = series(n)
        store = RunStore()
        data = store.rank(0)
        data.axis.append(x.astype(np.int64))
        col = data.columns["loss"] = Column("loss")
        col.append(y.astype(np.float32))
        data.version += 1
        views = iter([View(0, n - 1 - i, ema=False) for i in range(REPEATS * 2)])  # a new view: no cache hit
        out[n] = timed(lambda: render_chart(data, spec, next(views), *SIZE))  # noqa: B023 (called at once)
    return out


def main() -> None:
    results = {"accmon LineChart": bench_accmon()}
    for name, fn in (("textual-plot 0.10 (braille)", bench_textual_plot), ("textual-plotext 1.0 (plotext)", bench_plotext)):
        try:
            results[name] = asyncio.run(fn())
        except ImportError as exc:
            print(f"{name}: not installed ({exc.name}); pip install textual-plot textual-plotext")
    print(f"one redraw of a {SIZE[0]}×{SIZE[1]} line chart, median of {REPEATS} (ms); — = not run (previous N over {LIMIT_S} s)")
    print(f"{'points':>12} " + " ".join(f"{k:>30}" for k in results))
    for n in POINTS:
        cells = []
        for r in results.values():
            cells.append(f"{r[n] * 1e3:>30.1f}" if n in r else f"{'—':>30}")
        print(f"{n:>12,} " + " ".join(cells))


if __name__ == "__main__":
    main()
