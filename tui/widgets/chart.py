"""Braille line charts over the store, decimated to the dots they have: the cost follows the screen.

Each chart column of braille dots (two per terminal cell) draws the min–max span of the rows it covers, joined
to its neighbours, so a spike in 10 M steps still shows as a spike. Smoothing is an exponential moving average
over the column means, weighted by how many rows each column holds (per-step strength, as TensorBoard's
slider), drawn bright over the faded raw span.

Several ranks together (a `RankGroup`): the faded span is the spread across ranks (per column, the lowest and
highest value any rank had), and the bright line the median across ranks of their column means (smoothed when
smoothing is on). Each rank's columns are read from its own block summaries: ranks × the single-rank cost.
Rendering is a pure function (`render_chart`) of the store, the view and the size, so it is tested without an
app; `LineChart` caches its strips until one of those changes.

A baseline (`--baseline FILE`, a `BaselineOverlay`): each series' baseline is drawn first, as one dim line (its
column means, smoothed as the live line is), so the live series draw over it. Its columns are the chart's
columns mapped to the baseline's steps by the overlay's `to_base` (by step, epoch or samples seen), and read
from the baseline's block summaries like any series: the cost stays per column.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from accmon.probe.rules import SEVERITY_RANK

from ..store import FLAG_NAN, FLAG_POSINF, Buckets, RankData, RankGroup
from . import fmt
from .palette import palette
from .plot import (
    BRAILLE,
    MAX_PLOT,
    SeriesReader,
    dots_to_cells,
    ema,
    fill_gaps,
    log_line,
    row_edges,
    sampled_every,
    scaled,
    spans,
)

LABEL_W = 7  # y-axis labels: "-1.2e-5" is the widest `fmt.num` writes at this width
SEVERITY_ORDER = SEVERITY_RANK  # markers: the most severe alert wins a cell


@dataclass(frozen=True)
class View:
    """What every time chart shows; one instance is shared, so zoom and pan move all charts together."""

    x0: float = 0.0
    x1: float = 1.0
    head: int | None = None  # replay: the newest step shown; nothing after it is drawn
    ema: bool = True
    ema_strength: float = 0.9  # per-step weight of the past, as TensorBoard's smoothing slider
    log_y: bool = False
    cursor: int | None = None  # a step to mark: where the selected alert began
    markers: tuple[tuple[int, str], ...] = ()  # (step, severity) of alerts, drawn on the time axis
    dark: bool = True


@dataclass(frozen=True)
class SeriesSpec:
    name: str  # column name in the store
    label: str  # legend text
    color: int = 0  # index into the palette's series colours


@dataclass(frozen=True)
class ChartSpec:
    title: str
    series: tuple[SeriesSpec, ...]
    log: bool | None = None  # None: the view's log toggle; True/False: always (learning rates are log)
    unit_range: bool = False  # accuracy-like: draw 0..1 whenever the data lies inside it
    smooth: bool = True  # whether the view's EMA applies


@dataclass(frozen=True)
class BaselineOverlay:
    """A baseline run drawn under the live series: its data, and the map from this run's steps to its steps."""

    data: RankData
    to_base: Callable[[np.ndarray], np.ndarray] | None = None  # None: the same steps
    key: object = None  # changes when the mapping does (the alignment, the live run's epochs)


@dataclass
class Rendered:
    lines: list[Strip]
    legend: Text
    y_range: tuple[float, float] | None = None
    empty: bool = True
    dots: dict[str, int] = field(default_factory=dict)  # lit dots per series label, for tests
    # What was drawn, per series label, before the y scale: "lo"/"hi" (the span: raw min–max, or across ranks),
    # "line" (the bright line: EMA, or the ranks' median; absent for one rank unsmoothed). For tests and tools.
    series: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    column_steps: np.ndarray | None = None  # step edges of the dot columns: column i covers [e[i], e[i+1])
    subtitle: Text | None = None  # the bottom border's label: the baseline's legend, when one is drawn


def _baseline_lines(base: BaselineOverlay, spec: ChartSpec, x0: float, x1: float, wd: int,
                    strength: float) -> list[tuple[SeriesSpec, np.ndarray]]:
    """Per series the baseline has: its line over the chart's dot columns (column means, smoothed as the live
    line is; NaN where the baseline has nothing)."""
    se = x0 + (x1 - x0) * np.arange(wd + 1) / wd
    mapped = base.to_base(se) if base.to_base is not None else se
    edges = row_edges(base.data, mapped)
    out = []
    for s in spec.series:
        col = base.data.columns.get(s.name)
        if col is None:
            continue
        b = col.buckets(edges)
        if not b.counts.any():
            continue
        line = ema(b.means, b.counts, strength) if strength > 0 else b.means.astype(np.float64)
        line[b.counts == 0] = np.nan
        out.append((s, line))
    return out


def render_chart(data: RankData | RankGroup | None, spec: ChartSpec, view: View, width: int, height: int,
                 baseline: BaselineOverlay | None = None) -> Rendered:
    """The chart as strips of `width` cells, `height` rows: plot, time axis with alert markers, step labels.
    With a baseline, its series drawn dim under the live ones."""
    pal = palette(view.dark)
    base = Style(color=pal.text)
    dim = Style(color=pal.dim)
    legend = Text(spec.title, style=Style(color=pal.text, bold=True))
    if width < LABEL_W + 4 or height < 2:
        return Rendered([Strip.blank(width)] * max(height, 0), legend)
    labels_row = height >= 5
    plot_rows = height - 1 - (1 if labels_row else 0)
    pw = width - LABEL_W - 1
    wd = 2 * pw
    x0, x1 = float(view.x0), float(max(view.x1, view.x0 + 1))
    if not x1 > x0:  # near 2**63 one step is below a float's resolution: widen to what a float can tell apart
        x1 = x0 + max(1.0, 64 * math.ulp(x0))
    log = view.log_y if spec.log is None else spec.log
    flags_any = np.zeros(pw, dtype=np.uint8)
    lo = hi = math.nan
    present: list[tuple[SeriesSpec, float | None]] = []
    dots: dict[str, int] = {}
    drawn: list[tuple[SeriesSpec, Buckets, np.ndarray | None]] = []
    group = isinstance(data, RankGroup)
    if data is not None and data.axis.n:
        reader = SeriesReader(data, x0, x1, wd, view.head)
        strength = view.ema_strength if (view.ema and spec.smooth) else 0.0
        pre = None
        if strength > 0 and data.axis.first is not None and x0 > data.axis.first:
            width_steps = (x1 - x0) / wd
            # Start the average earlier, so the first column is not just the raw value: 3 time constants.
            warm = min(x0 - data.axis.first, 3.0 / (1 - strength))
            n_pre = min(int(math.ceil(warm / max(width_steps, 1e-9))), 4 * wd)
            if n_pre:
                pre = SeriesReader(data, x0 - n_pre * width_steps, x0, n_pre, view.head)
        for s in spec.series:
            b = reader.buckets(s.name)
            if b is None or (not b.counts.any() and not b.flags.any()):
                continue
            smooth = None
            if strength > 0:
                pb = pre.buckets(s.name) if pre is not None else None
                if pb is not None:
                    sm = ema(np.concatenate([pb.means, b.means]), np.concatenate([pb.counts, b.counts]), strength)
                    smooth = sm[len(pb.means):]
                else:
                    smooth = ema(b.means, b.counts, strength)
                smooth[b.counts == 0] = np.nan
            elif group:
                smooth = b.means.copy()  # the ranks' median, as the line over their spread
            drawn.append((s, b, smooth))
            f = b.flags.reshape(pw, 2)
            flags_any |= f[:, 0] | f[:, 1]
    base_lines: list[tuple[SeriesSpec, np.ndarray]] = []
    if baseline is not None and baseline.data.axis.n and drawn:
        strength = view.ema_strength if (view.ema and spec.smooth) else 0.0
        base_lines = [(s, log_line(v, log)) for s, v in _baseline_lines(baseline, spec, x0, x1, wd, strength)]
    for _s, line in base_lines:
        if np.isfinite(line).any():
            lo = np.nanmin([lo, np.nanmin(line)]) if not math.isnan(lo) else float(np.nanmin(line))
            hi = np.nanmax([hi, np.nanmax(line)]) if not math.isnan(hi) else float(np.nanmax(line))
    for _s, b, _smooth in drawn:
        mins, maxs, over = scaled(b, log)
        flags_any |= (over.reshape(pw, 2).any(axis=1)).astype(np.uint8)
        if np.isfinite(mins).any():
            lo = np.nanmin([lo, np.nanmin(mins)]) if not math.isnan(lo) else np.nanmin(mins)
            hi = np.nanmax([hi, np.nanmax(maxs)]) if not math.isnan(hi) else np.nanmax(maxs)
    if spec.unit_range and not log and not math.isnan(lo) and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    if not math.isnan(lo):
        if hi - lo < 1e-12:
            pad = abs(lo) * 0.05 or 0.5
            lo, hi = lo - pad, hi + pad
        else:
            pad = (hi - lo) * 0.04
            lo, hi = (lo if spec.unit_range and lo == 0 else lo - pad), (hi if spec.unit_range and hi == 1 else hi + pad)
    hd = plot_rows * 4

    def to_dot(v: np.ndarray) -> np.ndarray:
        """Dot rows (float, NaN where there is nothing to draw), clamped to the plot."""
        with np.errstate(all="ignore"):
            r = np.rint((hi - np.asarray(v, dtype=np.float64)) / (hi - lo) * (hd - 1))
        return np.where(np.isfinite(r), r, np.nan).clip(0, hd - 1)

    series_out: dict[str, dict[str, np.ndarray]] = {}
    owner = np.full((plot_rows, pw), -1, dtype=np.int64)
    codes = np.zeros((plot_rows, pw), dtype=np.uint16)
    styles: list[Style] = []
    if not math.isnan(lo):
        for s, line in base_lines:  # first: the live series draw over it
            sv = fill_gaps(line)
            top, bot, valid = spans(to_dot(sv), to_dot(sv))
            cells = dots_to_cells(top, bot, valid, plot_rows)
            styles.append(dim)
            codes |= cells
            owner[cells > 0] = len(styles) - 1
            series_out[f"baseline {s.label}"] = {"line": line}
            dots[f"baseline {s.label}"] = int(valid.sum())
        for s, b, smooth in drawn:
            mins, maxs, _over = scaled(b, log)
            mid = fill_gaps((mins + maxs) / 2)
            fill = np.isnan(mins) & ~np.isnan(mid)
            mins, maxs = np.where(fill, mid, mins), np.where(fill, mid, maxs)
            passes = [(maxs, mins, pal.series_style(s.color, faded=smooth is not None))]
            series_out[s.label] = {"lo": b.mins, "hi": b.maxs}
            if smooth is not None:
                series_out[s.label]["line"] = smooth
                sv = np.clip(smooth, -MAX_PLOT, MAX_PLOT)
                if log:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        sv = np.where(sv > 0, np.log10(sv), np.nan)
                sv = fill_gaps(sv)
                passes.append((sv, sv, pal.series_style(s.color)))
            lit = 0
            for top_v, bot_v, style in passes:
                top, bot, valid = spans(to_dot(top_v), to_dot(bot_v))
                cells = dots_to_cells(top, bot, valid, plot_rows)
                layer = len(styles)
                styles.append(style)
                codes |= cells
                owner[cells > 0] = layer
                lit = int(valid.sum())
            dots[s.label] = lit
    for s, b, _smooth in drawn:
        value: float | None
        if view.head is None and data is not None:
            value = data.latest(s.name)  # a group: the ranks' median (a NaN or Inf on any rank wins)
        else:
            nz = np.flatnonzero((b.counts > 0) | (b.flags > 0))
            value = None
            if len(nz):
                i = nz[-1]
                value = float(b.means[i]) if b.counts[i] else (math.nan if b.flags[i] & FLAG_NAN else
                                                                  (math.inf if b.flags[i] & FLAG_POSINF else -math.inf))
        present.append((s, value))
    for s, value in present:
        legend.append("  ━ ", style=pal.series_style(s.color))
        legend.append(f"{s.label} ", style=base)
        vstyle = Style(color=pal.severity["critical"], bold=True) if value is not None and not math.isfinite(value) else base
        legend.append(fmt.num(value), style=vstyle)
    if present and view.ema and spec.smooth:
        legend.append(f"  ema {view.ema_strength:g}", style=dim)
    if isinstance(data, RankData):
        gaps = [sampled_every(data, s.name) for s, _b, _sm in drawn]
        if gaps and all(gaps):
            # Sparse samples are drawn joined: say so, or the chart's end before the run's looks like lost data.
            legend.append(f"  sampled every {fmt.steps(max(g for g in gaps if g))} steps", style=dim)
    if log:
        legend.append("  log", style=dim)

    # -- assemble strips ---------------------------------------------------------------------------------
    cursor_col = None
    if view.cursor is not None and x0 <= view.cursor <= x1:
        cursor_col = min(pw - 1, int((view.cursor - x0) / (x1 - x0) * pw))
    cursor_bg = Style(bgcolor=_cursor_bg(view.dark))
    tick_rows: dict[int, str] = {}
    if not math.isnan(lo):
        n_ticks = max(2, min(6, plot_rows // 3 + 1))
        if log:
            # Whole decades only; every k-th one when there are more decades than rows for labels.
            decades = list(range(math.ceil(lo), math.floor(hi) + 1))
            k = max(1, math.ceil(len(decades) / n_ticks))
            ticks = [float(d) for d in decades[::k]]
            if len(ticks) < 2:  # less than two decades in view: round values, placed on the log scale
                ticks = [math.log10(v) for v in fmt.nice_ticks(10 ** lo, 10 ** hi, n_ticks) if v > 0]
        else:
            ticks = fmt.nice_ticks(lo, hi, n_ticks)
        for v in ticks:
            d = to_dot(np.array([v], dtype=np.float64))[0]
            if math.isnan(d):
                continue
            r = int(d) // 4
            label = fmt.num(10 ** v) if log else fmt.num(v)
            tick_rows.setdefault(r, label[:LABEL_W])
    nan_style = Style(color=pal.severity["critical"], bold=True)
    lines: list[Strip] = []
    message = None
    if not drawn:
        message = f"no {spec.title} logged so far" if data is not None else "waiting for the run"
    elif math.isnan(lo):
        message = "no finite value in view: NaN/Inf only"
    # Cell characters and style keys for the whole plot at once; each row then becomes a few Segments, one per
    # run of cells with the same style (no Python work per cell).
    grid = BRAILLE[codes]
    keys = owner + 3  # -2 (NaN mark) → 1, -1 (nothing) → 2, layer i → i + 3
    if flags_any.any():
        grid[0, flags_any > 0] = "✕"
        keys[0, flags_any > 0] = 1
    if message:
        start = max(0, (pw - len(message)) // 2)
        text = message[: pw - start]
        grid[plot_rows // 2, start : start + len(text)] = list(text)
        keys[plot_rows // 2, start : start + len(text)] = 2
    keys = keys * 2
    if cursor_col is not None:
        keys[:, cursor_col] += 1
    key_styles: dict[int, Style] = {}
    for r in range(plot_rows):
        segs = [Segment(tick_rows.get(r, "").rjust(LABEL_W), dim), Segment("┤" if r in tick_rows else "│", dim)]
        row = "".join(grid[r].tolist())
        row_keys = keys[r]
        bounds = [0, *(np.flatnonzero(row_keys[1:] != row_keys[:-1]) + 1).tolist(), pw]
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            k = int(row_keys[i0])
            cached = key_styles.get(k)
            if cached is None:
                o = k // 2 - 3
                cached = nan_style if o == -2 else (styles[o] if o >= 0 else base)
                if k % 2:
                    cached = cached + cursor_bg
                key_styles[k] = cached
            segs.append(Segment(row[i0:i1], cached))
        lines.append(Strip(segs, width))
    # Time axis: alert markers (the most severe alert wins a cell).
    axis = ["─"] * pw
    axis_styles: list[Style] = [dim] * pw
    best: dict[int, int] = {}
    for step, sev in view.markers:
        if x0 <= step <= x1 and (view.head is None or step <= view.head):
            c = min(pw - 1, int((step - x0) / (x1 - x0) * pw))
            rank = SEVERITY_ORDER.get(sev, 0)
            if rank >= best.get(c, -1):
                best[c] = rank
                axis[c] = "▲"
                axis_styles[c] = Style(color=pal.severity.get(sev, pal.text), bold=True)
    if cursor_col is not None and cursor_col not in best:
        axis[cursor_col] = "┴"
    segs = [Segment(" " * LABEL_W, dim), Segment("└", dim)]
    segs += [Segment(ch, st) for ch, st in zip(axis, axis_styles)]
    lines.append(Strip(Segment.simplify(segs), width))
    if labels_row:
        lab = [" "] * pw
        n = max(3, pw // 10)
        for v in fmt.nice_ticks(x0, x1, n):
            c = int(round((v - x0) / (x1 - x0) * (pw - 1)))
            text = fmt.steps(v)
            start = min(max(0, c - len(text) // 2), pw - len(text))
            if start < 0 or any(ch != " " for ch in lab[max(0, start - 1) : start + len(text) + 1]):
                continue
            lab[start : start + len(text)] = list(text)
        lines.append(Strip([Segment(" " * (LABEL_W + 1) + "".join(lab), dim)], width))
    # The baseline's legend goes on the bottom border: the top one is full with the live series' values.
    subtitle = Text("┈ baseline: " + ", ".join(s.label for s, _ in base_lines), style=dim) if base_lines else None
    return Rendered(lines, legend, None if math.isnan(lo) else (lo, hi), empty=not drawn, dots=dots,
                    series=series_out, column_steps=x0 + (x1 - x0) * np.arange(wd + 1) / wd, subtitle=subtitle)


def _cursor_bg(dark: bool) -> str:
    return "#3a3a3a" if dark else "#dcdcdc"


class LineChart(Widget):
    """A braille line chart of some series of one rank, or of all ranks together, over the shared view
    (line API: one Strip a row)."""

    DEFAULT_CSS = """
    LineChart {
        width: 1fr;
        height: 1fr;
        min-height: 5;
        border: round $panel;
        border-title-align: left;
        padding: 0;
    }
    """

    def __init__(self, spec: ChartSpec, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.spec = spec
        self.data: RankData | RankGroup | None = None
        self.view = View()
        self.baseline: BaselineOverlay | None = None
        self._key: tuple | None = None
        self._rendered: Rendered | None = None
        self._styled: list[Strip] = []

    def show(self, data: RankData | RankGroup | None, view: View, baseline: BaselineOverlay | None = None) -> None:
        """Point the chart at data, a view and a baseline; redraws only when something it draws changed."""
        self.data, self.view, self.baseline = data, view, baseline
        if self._cache_key() != self._key:
            self.rendered()
            self.refresh()

    def on_resize(self) -> None:
        self.rendered()

    def _cache_key(self) -> tuple:
        d = self.data
        # The widget's own style (background) follows the theme, which is in the view (`dark`).
        b = self.baseline
        return (id(d), d.version if d is not None else -1, self.view, self.size.width, self.size.height,
                None if b is None else (id(b.data), b.key))

    def rendered(self) -> Rendered:
        key = self._cache_key()
        if key != self._key or self._rendered is None:
            self._rendered = render_chart(self.data, self.spec, self.view, self.size.width, self.size.height,
                                          self.baseline)
            base = self.rich_style
            self._styled = [line.apply_style(base) for line in self._rendered.lines]
            self._key = key
            if self.is_mounted:
                self.border_title = self._rendered.legend
                self.border_subtitle = self._rendered.subtitle
        return self._rendered

    def render_line(self, y: int) -> Strip:
        # Strips are made when the data, view or size change (show, on_resize), not per line drawn.
        if self._rendered is None or len(self._styled) != self.size.height:
            self.rendered()
        if y >= len(self._styled):
            return Strip.blank(self.size.width, self.rich_style)
        return self._styled[y]
