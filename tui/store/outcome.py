"""How a run ended: who stopped it, how its command exited, and the words for it."""

from __future__ import annotations

from typing import Any


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
