"""How a run ended: the one answer to "finished, crashed, truncated or still running?" (`run_outcome`, read by the
viewer's store and by `check`), who stopped it, how its command exited, and the words for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """A run's outcome as its frames tell it."""

    status: str  # running, finished, crashed or truncated: `check --json`'s run.status (design.md, "Contracts")
    error: str | None = None  # why it crashed: the crashed end frame's error, the command's exit, the silent ranks
    exit_code: int | None = None  # the command's, from the last exit frame (`accmon run` appends it)
    stopped: dict[str, Any] | None = None  # who stopped a run that did not crash (clean_stop): the first end frame's
    # Per rank: its end frame's status; "stopped" for a rank with none once the run is over, "running" before.
    ranks: dict[int, str] = field(default_factory=dict)


def _never() -> bool:
    return False


def run_outcome(ranks: Iterable[int], ends: Iterable[dict[str, Any]], exits: Iterable[dict[str, Any]], *,
                lost: bool = False, running: Callable[[], bool] = _never,
                last_heard: Mapping[int, float] | None = None, last_step: Mapping[int, int] | None = None) -> Outcome:
    """Finished, crashed, truncated or running, from what the run sent: `ranks` heard from, their `end` frames, the
    launcher's `exit` frames, whether steps were `lost`, and `running()`: whether the run may still send (the live
    registry lists it; for a viewer, no exit frame yet), asked only when the frames leave it open.

    - crashed: an end frame says so, or the command died (a signal, a non-zero exit code; not the SIGINT or 130 of
      a run the user or accmon stopped), or, the run over, a rank of several never sent its end frame (killed?):
      the error names it, the first to fall silent (`last_heard`) when none ended;
    - finished: every rank heard from ended, and no step was lost (else truncated: never finished with a gap);
    - running: a rank has not ended and the run may still send;
    - truncated: no end frame, and the run is over (a recording cut short).
    """
    ends = list(ends)  # in the order they came: the first crash is the likeliest cause, the others its echo
    exits = list(exits)
    stopped = next((s for s in (clean_stop(e.get("stopped")) for e in ends) if s is not None), None)
    error: str | None = None
    exit_code: int | None = None
    for e in exits:
        exit_code = e.get("exit_code")
        if stopped is not None and interrupted_exit(e, stopped):
            continue  # a Ctrl-C ends Python by SIGINT: the run said the user stopped it, not a crash
        if e.get("exit_code") not in (0, None) or e.get("signal"):
            error = error or (f"killed by {e['signal']}" if e.get("signal") else f"exit code {e['exit_code']}")
    crashed = [e for e in ends if e.get("status") == "crashed"]
    if crashed:
        error = crashed[0].get("error") or error
    ended = {e.get("rank", 0): e.get("status", "finished") for e in ends}
    heard = sorted(set(ranks) | ended.keys())
    silent = [r for r in heard if r not in ended]
    over = bool(exits) or (bool(ends) and not silent) or not running()
    if crashed or error:
        status = "crashed"
    elif ends and not silent:
        status = "truncated" if lost else "finished"
    elif not over:
        status = "running"
    else:
        status = "truncated"  # the command ended, or nothing runs, and its run never wrote its end: cut short
    per_rank = {r: ended.get(r, "stopped" if over else "running") for r in heard}
    if over and len(heard) >= 2 and silent:
        # A multi-rank run with a rank that stopped is crashed and says which: the first to fall silent when the
        # launcher then killed the others (torchrun does).
        when = last_heard or {}
        silent.sort(key=lambda r: when.get(r, 0.0))
        if len(silent) < len(heard):
            what = f"rank {', '.join(map(str, silent))} stopped without an end frame (killed?)"
        else:
            first = silent[0]
            what = (f"rank {first} stopped first, at step {(last_step or {}).get(first, -1)}, without an end frame "
                    f"(killed?); the other ranks stopped after it")
        status, error = "crashed", what + (f"; {error}" if error else "")
    return Outcome(status, error, exit_code, stopped, per_rank)


def clean_stop(stopped: Any) -> dict[str, Any] | None:
    """An end frame's `stopped` ({"by", "reason", "step"}: who stopped a run that did not crash), as the viewer and
    `check` show it: known fields of known types, whatever a recording or a peer holds; None when there is none."""
    if not isinstance(stopped, dict) or not isinstance(stopped.get("by"), str):
        return None
    step = stopped.get("step")
    reason = stopped.get("reason")
    out = {"by": stopped["by"][:64], "reason": reason[:200] if isinstance(reason, str) else None,
           "step": step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None}
    if isinstance(stopped.get("alert"), str):  # by "alert" (--stop-on): which alert id
        out["alert"] = stopped["alert"][:64]
    return out


def interrupted_exit(exit: dict[str, Any] | None, stopped: dict[str, Any] | None = None) -> bool:
    """An `exit` frame of a command the user interrupted: SIGINT, or the shell's 130 for it. With an end frame
    that says the user stopped the run, that exit is how a Ctrl-C ends Python, not a crash. A run accmon stopped
    (`stopped` by "alert" or "viewer") whose script let StopTraining go uncaught exits with 1: Python ends by
    SIGINT only for KeyboardInterrupt itself, not a subclass."""
    if exit is not None and stopped and stopped.get("by") in ("alert", "viewer") and exit.get("exit_code") == 1:
        return True
    return exit is not None and (exit.get("signal") == "SIGINT" or exit.get("exit_code") == 130)


def stop_words(stopped: dict[str, Any] | None) -> str | None:
    """'stopped by the user (Ctrl-C) at step 41', or None: one wording for the header, headless and `check`."""
    if not stopped:
        return None
    if stopped["by"] == "alert":  # --stop-on: "nan_loss: the loss is NaN ..." → stopped by accmon: nan_loss at step N (...)
        alert, _, why = (stopped.get("reason") or "an alert").partition(": ")
        at = f" at step {stopped['step']}" if stopped.get("step") is not None else ""
        return f"stopped by accmon: {alert}{at}" + (f" ({why})" if why else "")
    how = " (Ctrl-C)" if stopped["by"] == "user" and stopped.get("reason") == "KeyboardInterrupt" else \
        f" ({stopped['reason']})" if stopped.get("reason") else ""
    who = {"user": "the user", "viewer": "the viewer"}.get(stopped["by"], stopped["by"])
    at = f" at step {stopped['step']}" if stopped.get("step") is not None else ""
    return f"stopped by {who}{how}{at}"
