"""accmon.probe: everything inside the training process.

Two lines to start, explicitly::

    import accmon.probe as accmon
    run = accmon.start("my-run", record="run.accmon")   # or: accmon run -- python train.py, with no code at all
    ...
    accmon.log(loss=loss_value, acc=accuracy)           # anywhere in the loop; costs about a microsecond

Stop a doomed run gracefully: `accmon.watch(model, stop_on="nan_loss")` (or `start(..., stop_on=...)`, or
`accmon run --stop-on nan_loss`) raises `accmon.StopTraining`, a KeyboardInterrupt, from the optimizer step that
follows the alert: a script that saves a checkpoint on Ctrl-C saves it then too.

Importing this package imports neither torch nor textual: framework hooks live in `accmon.probe.torch` and
`accmon.probe.keras` and load only when asked for.
"""

from __future__ import annotations

from typing import Any

from .run import Run, __version__, current, log, start
from .stop import StopOnError, StopTraining

__all__ = ["Run", "StopOnError", "StopTraining", "__version__", "current", "log", "start", "watch"]


def watch(*args: Any, **kwargs: Any) -> Any:
    """Instrument a PyTorch model (and optimizer, loss): see `accmon.probe.torch.watch`. Imports torch."""
    from .torch import watch as torch_watch

    return torch_watch(*args, **kwargs)
