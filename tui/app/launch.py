"""Entry points for the command line (tui/cli.py, tui/runner.py, tui/remote.py): run the app over a live run,
a process about to register one, a recording or the picker; a viewer that dies says so and keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from typing import Any

from accmon.probe import registry

from ..app_sources import LiveSource, ReplaySource
from ..baseline import Baseline
from ..on_alert import AlertCommand
from .viewer import AccmonApp


def save_crash(exc: BaseException, where: str | None = None) -> str | None:
    """Write `exc`'s traceback to a file of its own (in the per-user runtime directory) and return its path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        folder = where or registry.runtime_dir()
        path = os.path.join(folder, f"accmon-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path
    except OSError:
        return None


def run_app(app: AccmonApp, **run_kwargs: Any) -> int:
    """Run the app; when it died of an exception, save the traceback, say where, and return 1 (Textual ends an
    app on an unhandled exception with return code 1 and prints the traceback, but `run()` returns None: the
    command exited 0 and the traceback scrolled away). Reads Textual's `_exception`, the error it ended on."""
    result = app.run(**run_kwargs)
    code = app.return_code or 0
    if code:
        exc = getattr(app, "_exception", None)
        path = save_crash(exc) if isinstance(exc, BaseException) else None
        saved = f"; the traceback is saved in {path}" if path else ""
        sys.stderr.write(f"accmon: the viewer stopped on an error{saved} — please attach it to a bug report\n")
        return code
    return result or 0


def run_live(entries: list[registry.RunEntry], *, record: str | None = None, on_alert: AlertCommand | None = None,
             baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon` / `accmon attach`: follow one run (all its ranks), history first; re-attach when it restarts."""
    app = AccmonApp(LiveSource(entries, record=record), attach=lambda es: LiveSource(es, record=record),
                    on_alert=on_alert, baseline=baseline, align=align)
    return run_app(app)


def run_live_for_process(run_id: str, proc: subprocess.Popen) -> int:
    """`accmon run -- CMD`: follow the run that `proc` is about to register as `run_id`; stay open after it ends."""

    def find() -> list[registry.RunEntry]:
        return [e for e in registry.list_runs() if e.run_id == run_id]

    source = LiveSource([], find_again=find, process=proc)
    app = AccmonApp(source, pick=False)
    return run_app(app)


def run_replay(path: str, *, baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon replay FILE [--baseline GOOD]`."""
    return run_app(AccmonApp(ReplaySource(path), baseline=baseline, align=align))


def run_picker(*, baseline: Baseline | None = None, align: str = "step") -> int:
    """`accmon` with several live runs: choose one first."""
    return run_app(AccmonApp(None, pick=True, baseline=baseline, align=align))
