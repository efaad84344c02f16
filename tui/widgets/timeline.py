"""The replay timeline: the whole run as one track, its alerts, the playhead; click to seek."""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from . import fmt
from .chart import SEVERITY_ORDER
from .palette import palette


@dataclass(frozen=True)
class TimelineState:
    first: int = 0
    last: int = 0
    head: int = 0
    loaded: int = 0  # newest step read from the file so far
    playing: bool = False
    speed: str = "×1"
    markers: tuple[tuple[int, str], ...] = ()
    note: str = ""  # truncated recording, problems
    dark: bool = True


def render_timeline(state: TimelineState, width: int) -> list[Strip]:
    pal = palette(state.dark)
    dim = Style(color=pal.dim)
    base = Style(color=pal.text)
    status = f" {'▶' if state.playing else '⏸'} {state.speed}  step {fmt.steps(state.head)} / {fmt.steps(state.last)} "
    track_w = max(1, width - 2)
    span = max(1, state.last - state.first)

    def col(step: int) -> int:
        return min(track_w - 1, max(0, int((step - state.first) / span * (track_w - 1) + 0.5)))

    chars = ["─"] * track_w
    styles = [dim] * track_w
    head_c = col(state.head)
    loaded_c = col(state.loaded) if state.loaded < state.last else track_w - 1
    for c in range(head_c + 1):
        chars[c], styles[c] = "━", Style(color=pal.series[0])
    for c in range(loaded_c + 1, track_w):
        chars[c] = "┄"
    best: dict[int, int] = {}
    for step, sev in state.markers:
        c = col(step)
        if SEVERITY_ORDER.get(sev, 0) >= best.get(c, -1):
            best[c] = SEVERITY_ORDER.get(sev, 0)
            chars[c], styles[c] = "▲", Style(color=pal.severity.get(sev, pal.text), bold=True)
    chars[head_c], styles[head_c] = "●", Style(color=pal.series[0], bold=True)
    track = [Segment(" ", dim)] + [Segment(ch, st) for ch, st in zip(chars, styles)] + [Segment(" ", dim)]
    line2 = [Segment(status, base)]
    if state.note:
        line2.append(Segment(" " + state.note, Style(color=pal.severity["warning"])))
    return [Strip(Segment.simplify(track), width).crop(0, width), Strip(line2).crop_extend(0, width, None)]


class Timeline(Widget):
    """Replay position over the whole run. Clicking a point asks the app to seek there (`Timeline.Seek`)."""

    DEFAULT_CSS = """
    Timeline {
        height: 2;
    }
    """

    class Seek(Message):
        """The user clicked the track: go to this step."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.state = TimelineState()
        self._lines: list[Strip] | None = None
        self._key: tuple | None = None

    def show(self, state: TimelineState) -> None:
        if state != self.state:
            self.state = state
            self.refresh()

    def render_line(self, y: int) -> Strip:
        key = (self.state, self.size.width)
        if key != self._key or self._lines is None:
            self._lines = render_timeline(self.state, self.size.width)
            self._key = key
        if y >= len(self._lines):
            return Strip.blank(self.size.width, self.rich_style)
        return self._lines[y].apply_style(self.rich_style)

    def on_click(self, event: events.Click) -> None:
        track_w = max(1, self.size.width - 2)
        frac = min(1.0, max(0.0, (event.x - 1) / max(1, track_w - 1)))
        s = self.state
        self.post_message(self.Seek(int(round(s.first + frac * (s.last - s.first)))))
