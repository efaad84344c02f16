"""The keys that act on the run or write files: `S` stops a live run (after asking), `o` picks another run,
`x` saves a screenshot, `c`/`C` export the series (files.py writes them).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work

from accmon.probe import registry

from .. import export  # the module, not its names: tests replace export.have_pyarrow
from ..app_sources import Source, SourceStatus
from ..stop_screen import StopScreen, reply_words
from ..store import RunStore
from .files import export_name, svg_to_png, write_series
from .screens import PickerScreen
from .state import ViewerState


class RunKeys(ViewerState):
    """Stop, pick, screenshot and export (a part of AccmonApp)."""

    # -- runs -----------------------------------------------------------------------------------------------

    def action_stop_run(self) -> None:
        """`S`: ask, then ask the live run to stop at its next step (tui/stop_screen.py)."""
        request = getattr(self.source, "request_stop", None)
        if request is None or self.replay:
            self.say("only a live run can be stopped", severity="warning")
            return
        if isinstance(self.screen, StopScreen):
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                ranks = request("S key")
                self.say(f"asking the run to stop ({ranks} rank{'s' if ranks != 1 else ''})…" if ranks else
                         "not connected to the run yet: nothing was asked", severity="information" if ranks else "warning")
                if ranks:
                    self._stop_asked_at: float = time.monotonic()
                    self._stop_timer = self.set_interval(0.2, self._stop_answered)

        self.push_screen(StopScreen(self.store.name or getattr(self.source, "name", None) or "the run"), confirmed)

    def _stop_answered(self) -> None:
        replies: list[dict | None] = getattr(self.source, "stop_replies", lambda: [])()
        words = reply_words(replies)
        done = words is not None and (all(r is not None for r in replies) or "refused" in words)
        if done or time.monotonic() - self._stop_asked_at > 10.0:
            self._stop_timer.stop()
            self.say(words or "the run did not answer the stop request",
                     severity="warning" if words is None or "refused" in words else "information")

    def action_pick(self) -> None:
        if isinstance(self.screen, PickerScreen):
            return

        def chosen(entries: list[registry.RunEntry] | None) -> None:
            if entries:
                self.switch_source(self.attach(entries))

        self.push_screen(PickerScreen(self.list_runs), chosen)

    def switch_source(self, source: Source) -> None:
        old = self.source
        self.source = source
        self._generation = source.generation
        self.store = RunStore()
        self._status = SourceStatus()
        self.rank, self.cursor, self.head, self.span, self.follow, self.playing = None, None, None, None, True, False
        self._drawn.clear()
        self.set_class(self.replay, "replay")
        source.start()
        if old is not None:
            self._close_source(old)
        self.sync_now()

    @work(thread=True, group="close", exit_on_error=False)
    def _close_source(self, source: Source) -> None:
        source.close()

    # -- export -------------------------------------------------------------------------------------------------

    def _export_name(self, ext: str) -> Path:
        return export_name(self.export_dir, self.store.name, self.head_step(), ext)

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """`x`: an SVG of the screen (and a PNG when a converter is installed), named after the run and step,
        in the export folder. (Textual's own action of this name takes a file name and folder: given, they win.)"""
        target = self._export_name("svg")
        if filename is not None or path is not None:
            target = Path(path or target.parent) / (filename or target.name)
        path = self.save_screenshot(filename=target.name, path=str(target.parent))
        self.say(f"screenshot saved: {path}")
        self._to_png(path)

    @work(thread=True, group="export", exit_on_error=False)
    def _to_png(self, svg: str) -> None:
        png = svg_to_png(svg)
        if png:
            self.call_from_thread(self.say, f"PNG saved: {png}")

    def action_export_csv(self) -> None:
        self._export(self._export_name("csv"), "csv")

    def action_export_parquet(self) -> None:
        if not export.have_pyarrow():
            self.say(f"Parquet export {export.PARQUET_HINT}", severity="error")
            return
        self._export(self._export_name("parquet"), "parquet")

    @work(thread=True, group="export", exit_on_error=False)
    def _export(self, target: Path, fmt: str) -> None:
        what = "CSV" if fmt == "csv" else "Parquet"
        try:
            write_series(self.source, self.store, target, fmt)
        except OSError as exc:
            self.call_from_thread(self.say, f"{what} export failed: {exc.strerror or exc}", severity="error")
            return
        self.call_from_thread(self.say, f"series saved: {target}")
