"""Layers × time heat maps: per-layer gradient norms (vanishing and exploding at a glance), activation fractions.

One row per layer in model order, one cell per time column of the shared view, and the layer's newest value at
the right — the "bars now" reading beside the history. Gradient norms are coloured on a log scale with a
diverging ramp (blue: small, grey: middle, orange: large); fractions on a 0–1 viridis ramp. A cell whose rows
hold NaN or Inf shows ✕. Like the line chart, a cell reads block summaries, never rows: the cost follows the
screen.

All ranks together (a `RankGroup`): a cell is the largest value any rank had there (norms: a spike on one rank
must show), or the ranks' median of their means (fractions). A sharded run's gradient norms come combined from
the ranks' partial sums of squares (`store.ShardCombiner`): the app passes that derived series in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..store import RankData, RankGroup
from . import fmt
from .chart import SEVERITY_ORDER, View
from .palette import palette, ramp_colors
from .plot import SeriesReader

VALUE_W = 8


@dataclass(frozen=True)
class HeatSpec:
    title: str
    prefix: str  # column prefix, e.g. "grad_norm/": one row per layer
    log: bool = True  # log-scale diverging colours (norms), else 0–1 sequential (fractions)
    # Log scale: colours span `centre ± half` decades. A display scale, not a diagnosis: the rules decide what is
    # vanishing; these bands put typical healthy per-layer norms (1e-4..1e1) in the grey middle.
    centre: float = -1.5
    half: float = 6.0
    reduce: str = "max"  # "max" (norms: a spike must show) or "mean" (fractions)


@dataclass
class HeatRendered:
    lines: list[Strip]
    layers: list[str]
    values: np.ndarray  # layers × cells, what was coloured (log10 for log scale), NaN = no data


def layer_order(data: RankData | RankGroup, prefix: str, model_layers: list[str] | None) -> list[str]:
    """Layer names that have series under prefix, in model order when the model's layers are known."""
    names = [n[len(prefix):] for n in data.names(prefix)]
    if model_layers:
        pos = {n: i for i, n in enumerate(model_layers)}
        names.sort(key=lambda n: (pos.get(n, len(pos)), n))
    return names


def _hold(t: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Carry each measured column forward over the empty columns that follow it, up to the last measured one."""
    measured = np.flatnonzero(~empty)
    if len(measured) < 2:
        return t
    idx = np.where(~empty, np.arange(len(t)), -1)
    idx = np.maximum.accumulate(idx)
    out = t.copy()
    inner = np.arange(measured[0], measured[-1] + 1)
    out[inner] = t[idx[inner]]
    return out


# What a person calls each per-layer series (the store's names are internal).
PER_LAYER = {"grad_norm/": "per-layer gradient norms", "act_zero/": "per-layer dead fractions",
             "act_sat/": "per-layer saturated fractions"}


def render_heatmap(data: RankData | RankGroup | None, spec: HeatSpec, view: View, width: int, model_layers: list[str] | None = None,
                   ) -> HeatRendered:
    pal = palette(view.dark)
    dim = Style(color=pal.dim)
    base = Style(color=pal.text)
    layers = layer_order(data, spec.prefix, model_layers) if data is not None else []
    label_w = min(18, max([len(n) for n in layers] + [6]))
    cells = max(1, width - label_w - 1 - VALUE_W)
    lines: list[Strip] = []
    vals = np.full((len(layers), cells), np.nan)
    if not layers or data is None or not data.axis.n:
        what = PER_LAYER.get(spec.prefix, spec.prefix.rstrip("/"))
        msg = "waiting for the run" if data is None else f"no {what} logged so far"
        return HeatRendered([Strip([Segment(msg.center(width)[:width], dim)], width)], [], vals)
    x0, x1 = float(view.x0), float(max(view.x1, view.x0 + 1))
    reader = SeriesReader(data, x0, x1, cells, view.head)
    for i, layer in enumerate(layers):
        b = reader.buckets(spec.prefix + layer)
        if b is None:
            continue
        v = (b.maxs if spec.reduce == "max" else b.means).astype(np.float64)
        # A statistic sampled every N steps (the probe samples per-layer norms ever more sparsely as a run goes
        # on) leaves empty columns between its samples: each sample holds until the next, as it is what was
        # known; after the last one the columns stay empty (·).
        empty = (b.counts == 0) & (b.flags == 0)
        v = _hold(v, empty)
        counts = np.where(empty & ~np.isnan(v), 1, b.counts)
        if spec.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(v > 0, np.log10(v), np.where(counts > 0, -np.inf, np.nan))
            t = (np.clip(v, spec.centre - spec.half, spec.centre + spec.half) - spec.centre) / (2 * spec.half) + 0.5
        else:
            t = np.clip(v, 0.0, 1.0)
        vals[i] = v
        colours = ramp_colors(t, diverging=spec.log)
        bad = b.flags > 0
        label = layer if len(layer) <= label_w else "…" + layer[-(label_w - 1):]
        segs = [Segment(label.ljust(label_w) + " ", base)]
        run: list[str] = []
        run_style: Style | None = None
        for c in range(cells):
            if bad[c]:
                ch, st = "✕", Style(color=pal.severity["critical"], bold=True)
            elif colours[c] is None:
                ch, st = "·", dim
            else:
                ch, st = " ", Style(bgcolor=colours[c])
            if st != run_style and run:
                segs.append(Segment("".join(run), run_style))
                run = []
            run.append(ch)
            run_style = st
        if run:
            segs.append(Segment("".join(run), run_style))
        now: float | None
        if view.head is None:
            now = data.latest(spec.prefix + layer)
        elif isinstance(data, RankData):
            col = data.columns[spec.prefix + layer]
            head_row = int(reader.edges(data)[-1])
            measured = col.values(max(0, head_row - 1), head_row)
            now = float(measured[-1]) if len(measured) and not np.isnan(measured[-1]) else None
        else:  # replay, several ranks: the newest column drawn
            nz = np.flatnonzero(b.counts > 0)
            now = float((b.maxs if spec.reduce == "max" else b.means)[nz[-1]]) if len(nz) else None
        vstyle = Style(color=pal.severity["critical"], bold=True) if now is not None and not math.isfinite(now) else base
        segs.append(Segment(" " + fmt.num(now).rjust(VALUE_W - 1), vstyle))
        lines.append(Strip(segs, width))
    return HeatRendered(lines, layers, vals)


def axis_strip(view: View, width: int, label_w: int, cells: int, dark: bool) -> Strip:
    """The time axis under a heat map: alert markers in their columns."""
    pal = palette(dark)
    dim = Style(color=pal.dim)
    x0, x1 = float(view.x0), float(max(view.x1, view.x0 + 1))
    axis = ["─"] * cells
    styles = [dim] * cells
    best: dict[int, int] = {}
    for step, sev in view.markers:
        if x0 <= step <= x1 and (view.head is None or step <= view.head):
            c = min(cells - 1, int((step - x0) / (x1 - x0) * cells))
            if SEVERITY_ORDER.get(sev, 0) >= best.get(c, -1):
                best[c] = SEVERITY_ORDER.get(sev, 0)
                axis[c], styles[c] = "▲", Style(color=pal.severity.get(sev, pal.text), bold=True)
    segs = [Segment(fmt.steps(x0).ljust(label_w + 1)[: label_w + 1], dim)]
    segs += [Segment(ch, st) for ch, st in zip(axis, styles)]
    segs.append(Segment(" " + fmt.steps(x1).rjust(VALUE_W - 1), dim))
    return Strip(Segment.simplify(segs), width)


def scale_legend(spec: HeatSpec, dark: bool) -> Text:
    """A colour key for the border: the ramp with its end values."""
    text = Text()
    n = 9
    t = np.linspace(0, 1, n)
    if spec.log:
        lo = spec.centre - spec.half
        text.append(f"≤1e{lo:.0f} ", style=palette(dark).dim)
    else:
        text.append("0 ", style=palette(dark).dim)
    for c in ramp_colors(t, diverging=spec.log):
        text.append(" ", style=Style(bgcolor=c))
    text.append(f" ≥1e{spec.centre + spec.half:.0f}" if spec.log else " 1", style=palette(dark).dim)
    return text


class LayerHeatMap(ScrollView):
    """Layers × time heat map of one metric family (scrolls when there are more layers than rows)."""

    DEFAULT_CSS = """
    LayerHeatMap {
        height: 1fr;
        min-height: 4;
        border: round $panel;
        border-title-align: left;
        border-subtitle-align: right;
    }
    """

    def __init__(self, spec: HeatSpec, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.spec = spec
        self.data: RankData | RankGroup | None = None
        self.view = View()
        self.model_layers: list[str] | None = None
        self.note: str | None = None  # said after the title: where the values come from, when not plain
        self._key: tuple | None = None
        self._rendered: HeatRendered | None = None

    def on_mount(self) -> None:
        dark = self.app.current_theme.dark
        title = Text(self.spec.title, style=Style(color=palette(dark).text, bold=True))
        if self.note:
            title.append(f" · {self.note}", style=Style(color=palette(dark).dim))
        self.border_title = title
        self.border_subtitle = scale_legend(self.spec, self.app.current_theme.dark)

    def show(self, data: RankData | RankGroup | None, view: View, model_layers: list[str] | None = None) -> None:
        self.data, self.view, self.model_layers = data, view, model_layers
        if self._cache_key() != self._key:
            self.rendered()
            self.refresh()

    def set_note(self, note: str | None) -> None:
        """A few words after the title (e.g. that a sharded run's norms are combined across ranks)."""
        if note != self.note:
            self.note = note
            if self.is_mounted:
                self.on_mount()

    def _cache_key(self) -> tuple:
        d = self.data
        return (id(d), d.version if d is not None else -1, self.view, self.size.width,
                tuple(self.model_layers or ()))

    def on_resize(self) -> None:
        self.rendered()

    def rendered(self) -> HeatRendered:
        key = self._cache_key()
        if key != self._key or self._rendered is None:
            self._rendered = render_heatmap(self.data, self.spec, self.view, self.size.width, self.model_layers)
            self._key = key
            rows = len(self._rendered.lines) + (1 if self._rendered.layers else 0)
            self.virtual_size = Size(self.size.width, rows)
        return self._rendered

    def render_line(self, y: int) -> Strip:
        r = self._rendered if self._rendered is not None else self.rendered()
        row = self.scroll_offset.y + y
        width = self.size.width
        if r.layers and y == self.size.height - 1:
            label_w = min(18, max([len(n) for n in r.layers] + [6]))
            cells = max(1, width - label_w - 1 - VALUE_W)
            return axis_strip(self.view, width, label_w, cells, self.view.dark).apply_style(self.rich_style)
        if row >= len(r.lines):
            return Strip.blank(width, self.rich_style)
        return r.lines[row].apply_style(self.rich_style)
