"""The viewer's stop key (`S`, issue 18 item 2): a confirmation, then the run is asked to stop at its next step.

The request goes to every rank over the control socket (subscriber.RunClient.request_stop, the `stop` request
of docs/frames.md); the probe stops the training as `--stop-on` does, by "viewer", if this viewer may: over the
run's own ipc:// sockets (its own user, also through ssh) or with a CurveZMQ key allowed with control.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class StopScreen(ModalScreen[bool]):
    """Asks before stopping the run: `y` stops it, `n` or escape does nothing."""

    BINDINGS = [Binding("y", "dismiss(True)", "Stop the run"), Binding("n,escape", "dismiss(False)", "Cancel")]
    DEFAULT_CSS = """
    StopScreen { align: center middle; }
    StopScreen > Vertical { width: 64; height: auto; border: round $error; background: $surface; padding: 1 2; }
    """

    def __init__(self, run_name: str) -> None:
        super().__init__()
        self.run_name = run_name

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "stop the run?"
            # Markup off: the run's name is a peer's text.
            yield Static(f"Stop {self.run_name} at its next training step?", markup=False)
            yield Static("Its framework ends the loop as on Ctrl-C or EarlyStopping (checkpoints and callbacks run); "
                         "plain PyTorch gets accmon.StopTraining, a KeyboardInterrupt.", markup=False)
            yield Static("y  stop it      n / escape  keep it running", markup=False, id="stop-keys")


def reply_words(replies: list[dict | None]) -> str | None:
    """What the ranks answered, in one line for the header's note (None while no rank has answered)."""
    answered = [r for r in replies if r is not None]
    if not answered:
        return None
    refused = [r for r in answered if not r.get("ok")]
    if refused:
        return f"the run refused to stop: {refused[0].get('why') or 'not allowed'}"
    if len(answered) < len(replies):
        return f"stop asked: {len(answered)} of {len(replies)} ranks agreed so far"
    return "stop asked: the run stops at its next step"
