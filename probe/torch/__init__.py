"""accmon.probe.torch: PyTorch training, observed with no per-step host synchronisation.

Zero code change (what `accmon run -- python train.py` does when the script imports torch)::

    accmon.probe.torch.install(run)

Explicit, two lines::

    probe = accmon.probe.torch.watch(model, optimizer)      # starts a run if none is running
    ...
    probe.log(custom=value)            # extra metrics for the current step (numbers or tensors)
    probe.log_eval(loss=..., acc=...)  # validation results computed by the script
    probe.observe(output, target)      # accuracy for a custom loss function (no loss module)

`watch()` returns a context manager: leaving it publishes everything pending (and, if `watch()` started the
run, ends the run, as crashed when an exception leaves the block).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import run as run_module
from ..stop import parse_stop_on
from . import hooks
from .probe import TorchProbe

__all__ = ["TorchProbe", "Watch", "install", "uninstall", "watch", "active"]


def install(run: Any, *, budget: float | None = None, every: int | None = None) -> TorchProbe:
    """Observe every model, optimizer and loss of this process for `run` (idempotent).

    Cheap while nothing trains: a module call costs two hook calls that return at once.
    """
    probe = hooks.active()
    if probe is not None:
        if run is not None and probe.run is not run:
            probe.run = run
        return probe
    return hooks.attach(TorchProbe(run, budget=budget, every=every))


def uninstall() -> None:
    """Publish what is pending and remove every hook and patch."""
    hooks.detach()


def active() -> TorchProbe | None:
    return hooks.active()


class Watch:
    """What `watch()` returns: the probe's explicit API and a context manager around the training."""

    def __init__(self, probe: TorchProbe, run: Any, owns_run: bool) -> None:
        self.probe = probe
        self.run = run
        self._owns_run = owns_run

    def log(self, **scalars: Any) -> None:
        """Extra metrics of the current step: Python numbers, or tensors (read at the next flush, not now)."""
        self.probe.log(**scalars)

    def log_eval(self, **metrics: Any) -> None:
        """Validation results (`loss=`, `acc=`, any name; published as `val_<name>`) at the last step."""
        self.probe.log_eval(**metrics)

    def observe(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None, *,
                kind: str | None = None) -> None:
        """Loss and accuracy from a custom loss function's inputs (see TorchProbe.observe)."""
        self.probe.observe(output, target, loss, kind=kind)

    def step(self) -> None:
        """End a training step by hand, for loops that update weights without a torch.optim optimizer."""
        self.probe.end_step()

    def set_epoch(self, epoch: int) -> None:
        """The epoch number, for loops that do not iterate a DataLoader."""
        self.probe.set_epoch(epoch)

    def flush(self) -> None:
        """Publish everything measured so far (waits for the device: not for the inner loop)."""
        self.probe.flush()

    def close(self, status: str | None = None, error: str | None = None) -> None:
        """Stop observing; ends the run too when `watch()` started it."""
        hooks.detach() if hooks.active() is self.probe else self.probe.close()
        if self._owns_run:
            self.run.close(status or "finished", error=error)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or (issubclass(exc_type, SystemExit) and not exc.code):
            self.close("finished")
        else:
            self.close("crashed", f"{exc_type.__name__}: {exc}")


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None,
    loss_fn: Any = None,
    *,
    run: Any = None,
    every: int | None = None,
    budget: float | None = None,
    name: str | None = None,
    record: str | None = None,
    stop_on: str | list[str] | None = None,
) -> Watch:
    """Observe `model` (and `optimizer`, `loss_fn` when given; found automatically otherwise).

    `run`: the run to report to; the current one, or a new one (`name`, `record`) when None.
    `every`: take per-layer statistics every N steps instead of the step-number schedule (cadence.SCHEDULE).
    `budget`: accepted for compatibility; the schedule depends on the step number only (issue 15).
    `stop_on`: alert ids (`"nan_loss,lr_too_high"`) or a severity (`"critical"`: that or worse) that stop the
    training at the next optimizer step: `accmon.probe.StopTraining` (a KeyboardInterrupt) is raised from
    `optimizer.step()`, after the step. An unknown id raises StopOnError (a ValueError) here, naming the known ids.
    """
    stop = parse_stop_on(stop_on)  # checked before anything starts
    if not isinstance(model, nn.Module):
        raise TypeError(f"watch() needs the torch.nn.Module being trained; got {type(model).__name__}")
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        opts = [optimizer] if optimizer is not None else []
    elif isinstance(optimizer, (list, tuple)):
        opts = list(optimizer)
    else:
        opts = [optimizer]
    for o in opts:
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer (or a list of them); got {type(o).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be a loss module or function; got {type(loss_fn).__name__}")
    owns = False
    if run is None:
        run, owns = _current_or_new_run(name, record)
    if stop is not None:
        run.stop_on = stop
    probe = TorchProbe(run, budget=budget, every=every, model=model, optimizers=opts or None, loss_fn=loss_fn)
    hooks.attach(probe)
    return Watch(probe, run, owns)


def _current_or_new_run(name: str | None, record: str | None) -> tuple[Any, bool]:
    """The run started in this process, or a new one; True when it is new (the Watch then ends it)."""
    got = run_module.current()
    if got is not None:
        return got, False
    kwargs: dict[str, Any] = {}
    if record is not None:
        kwargs["record"] = record
    return run_module.start(name, **kwargs), True
