"""Colours that stay distinguishable for colour-blind readers, on dark and light terminals.

Series and severities use the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008), designed to be
told apart under protanopia, deuteranopia and tritanopia. Heat maps use a blue–grey–orange diverging scale
(magnitude as lightness, direction as hue: readable without hue at all) and viridis for fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from rich.color import Color
from rich.style import Style

OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}


@dataclass(frozen=True)
class Palette:
    """The colours one theme (dark or light background) draws with."""

    series: tuple[str, ...]
    severity: dict[str, str] = field(hash=False, compare=False)
    dim: str  # raw values behind a smoothed line, axes
    text: str
    cursor_bg: str

    def series_style(self, i: int, *, faded: bool = False) -> Style:
        return _series_style(self, i % len(self.series), faded)


@lru_cache(maxsize=64)
def _series_style(pal: Palette, i: int, faded: bool) -> Style:
    # Faded: the raw values behind a smoothed line, mixed halfway towards the background.
    return Style(color=_mix(pal.series[i], pal.cursor_bg, 0.55) if faded else pal.series[i])


def _mix(a: str, b: str, t: float) -> str:
    ca, cb = Color.parse(a).get_truecolor(), Color.parse(b).get_truecolor()
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(ca, cb))
    return f"#{r:02x}{g:02x}{bl:02x}"


DARK = Palette(
    # Validation (the second series) is yellow, not orange: orange is the warning colour (issue 21 item 12).
    series=(OKABE_ITO["sky"], OKABE_ITO["yellow"], OKABE_ITO["green"], OKABE_ITO["purple"], OKABE_ITO["orange"],
            OKABE_ITO["vermillion"]),
    severity={"critical": OKABE_ITO["vermillion"], "warning": OKABE_ITO["orange"], "info": OKABE_ITO["sky"]},
    dim="#707070",
    text="#d0d0d0",
    cursor_bg="#1e1e1e",
)
LIGHT = Palette(
    # On white, yellow and sky blue are too pale: their darker Okabe–Ito partners take their places.
    series=(OKABE_ITO["blue"], "#8a7400", OKABE_ITO["green"], OKABE_ITO["purple"], OKABE_ITO["vermillion"],
            OKABE_ITO["orange"]),
    severity={"critical": OKABE_ITO["vermillion"], "warning": "#a06e00", "info": OKABE_ITO["blue"]},
    dim="#909090",
    text="#202020",
    cursor_bg="#f4f4f4",
)


def palette(dark: bool) -> Palette:
    return DARK if dark else LIGHT


# Diverging: blue (small) → grey (centre) → orange/vermillion (large). 9 stops from ColorBrewer's PuOr-like
# blue–orange scheme, which ColorBrewer marks colour-blind safe.
_DIVERGING = ["#2d004b", "#2166ac", "#4393c3", "#92c5de", "#b0b0b0", "#fdb863", "#e08214", "#b35806", "#7f3b08"]
# viridis (van der Walt & Smith, matplotlib 2.0 default): perceptually uniform, colour-blind safe.
_VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]


def _ramp(stops: list[str]) -> np.ndarray:
    return np.array([Color.parse(c).get_truecolor() for c in stops], dtype=np.float64)


_DIV_RGB = _ramp(_DIVERGING)
_VIR_RGB = _ramp(_VIRIDIS)


def ramp_colors(t: np.ndarray, *, diverging: bool) -> list[str | None]:
    """Colours for t in [0, 1] (NaN → None), interpolated along the ramp."""
    rgb = _DIV_RGB if diverging else _VIR_RGB
    out: list[str | None] = []
    pos = np.clip(np.nan_to_num(t, nan=-1.0), 0.0, 1.0) * (len(rgb) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(rgb) - 1)
    frac = (pos - lo)[:, None]
    cols = rgb[lo] * (1 - frac) + rgb[hi] * frac
    for ok, (r, g, b) in zip(~np.isnan(t), cols.round().astype(int)):
        out.append(f"#{r:02x}{g:02x}{b:02x}" if ok else None)
    return out
