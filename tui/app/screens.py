"""The app's screens over the panels: help (keys and how to read the panels) and the live-run picker."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from accmon.probe import registry

from ..app_sources import age_words, group_runs, peek_cells, peek_runs, run_peek
from ..text import printable

HELP = """\
**Why is my accuracy zero, or stuck?** The panels show the run; the alerts say what is wrong, the fix and the
evidence. `n` moves every chart to where the next alert began.

```
n p     next / previous alert: charts go where it began
1-6     overview · gradients · activations · data · alerts · system
tab     into the alert list: ↑ ↓ choose, enter goes there
+ - 0   zoom in / out along steps · whole run
< >     pan along steps (live: ← → too)
f       follow the newest step
e E     smoothing on/off · stronger     g  log scale
r       ranks: all → rank 0 → rank 1 → … → all
x c C   screenshot (SVG) · series as CSV · as Parquet
b       baseline (--baseline): align by step → epoch → samples seen
o       another live run    t  theme    ctrl+p  palette
S       stop the live run at its next step (asks first)
?       help (j k scroll)   q or ctrl+c quit
space   replay: play/pause  [ ] slower/faster
← →     replay: seek 1 % (shift: 10 %)  home end
```

**Mouse**: click a tab, an alert, the replay timeline (to seek); scroll a pane. Replay speeds: ×1 … ×1000, max.

**Colours and marks**: ▲ on a time axis marks an alert (red ✖ critical, orange ▲ warning, blue ● info);
✕ marks NaN or Inf values (and values past 1e300). Time charts draw, per column of braille dots, the min–max
span of the steps it covers (a spike in ten million steps still shows), the smoothed line over the faded raw
one. Heat maps colour each layer per time column: gradient norms on a log scale (blue small, grey middle,
orange large), fractions 0–1 (viridis).

**Several ranks** (DDP, torchrun): all ranks together by default — the bright line is the median across ranks,
the faded band the lowest to highest value any rank had; `r` shows one rank at a time. A sharded model (FSDP)
publishes each rank's partial sums of squares: its gradient norms are combined across ranks (√Σ) in every view.

**Baseline** (`--baseline good.accmon`): every chart draws the baseline run's series as a dim grey line under
this run's (named on the chart's bottom border, "┈ baseline: train, val"), beside the same step, the same point
of the same epoch, or the same number of samples seen (`b`, or `--align`); the header's last line says how this
run stands against it.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and what the panels mean."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close"),
                Binding("j,down", "scroll(1)", "Down", show=False), Binding("k,up", "scroll(-1)", "Up", show=False),
                Binding("space,pagedown", "scroll(10)", "Page down", show=False)]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 100%; max-height: 40; border: round $accent;
                                  background: $surface; border-title-align: center; }
    HelpScreen MarkdownFence { margin: 0; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it costs ~80 ms of import: only when help is asked for

        with VerticalScroll() as box:
            box.border_title = "accmon help · escape closes"
            yield Markdown(HELP)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)


class PickerScreen(ModalScreen["list[registry.RunEntry] | None"]):
    """Live runs on this host (what `accmon ls` lists); enter attaches. Refreshed every second, off the UI loop."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical { width: 90%; max-width: 130; height: 70%; border: round $accent; background: $surface; }
    PickerScreen #picker-note { height: auto; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, list_runs: Callable[[], list[registry.RunEntry]] = registry.list_runs) -> None:
        super().__init__()
        self.list_runs = list_runs
        self.runs: dict[str, list[registry.RunEntry]] = {}

    def compose(self) -> ComposeResult:
        self.table: DataTable = DataTable(id="picker-table", cursor_type="row")
        self.note = Static("Live runs on this host — enter to attach, escape to cancel", id="picker-note")
        with Vertical():
            yield self.note
            yield self.table

    def on_mount(self) -> None:
        for label, key in (("run", "run"), ("name", "name"), ("ranks", "ranks"), ("step", "step"), ("status", "status"),
                           ("alerts", "alerts"), ("age", "age"), ("pid", "pid"), ("command", "cmd")):
            self.table.add_column(label, key=key)
        self.scan()
        self.set_interval(1.0, self._rescan)

    def _rescan(self) -> None:
        # Never a second scan beside one still running (a loaded machine, ranks slow to answer their peek): it
        # would cancel the first and, scan after scan, pile up threads that all end in the same table.
        if not any(w.group == "picker" and not w.is_finished for w in self.workers):
            self.scan()

    @work(thread=True, exclusive=True, group="picker", exit_on_error=False)
    def scan(self) -> None:
        entries = self.list_runs()
        peeks = peek_runs(entries)  # each rank's step, status and alerts: at most PEEK_TIMEOUT_S for all together
        peeks.update(getattr(self.list_runs, "peeks", None) or {})  # another host's, as its accmon answered them
        self.app.call_from_thread(self._show, entries, peeks)

    def _show(self, entries: list[registry.RunEntry], peeks: dict | None = None) -> None:
        if not self.is_attached:
            return  # dismissed while the scan ran
        table = self.table
        runs = {r.run_id: r.entries for r in group_runs(entries)}
        for gone in [k for k in self.runs if k not in runs]:
            table.remove_row(gone)
        now = time.time()
        for run_id, es in runs.items():
            e = es[0]
            step, status, alerts = peek_cells(run_peek(es, peeks or {}))
            # What a run's registry entry says is a peer's text: escaped, and never read as Rich markup.
            cells = (Text(printable(run_id)), Text(printable(e.name)), str(len(es)), Text(step, justify="right"),
                     status, alerts, age_words(now - e.started), str(e.pid), Text(printable(" ".join(e.cmd)[:60])))
            if run_id not in self.runs:
                table.add_row(*cells, key=run_id)
            else:
                for key, cell in (("ranks", cells[2]), ("step", cells[3]), ("status", cells[4]), ("alerts", cells[5]),
                                  ("age", cells[6])):
                    table.update_cell(run_id, key, cell)
        self.runs = runs
        self.note.update(
            "Live runs on this host — enter to attach, escape to cancel" if runs else
            "No live run on this host yet (start one with `accmon run -- python train.py`); waiting…")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entries = self.runs.get(str(event.row_key.value))
        if entries:
            self.dismiss(entries)

