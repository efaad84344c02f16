"""What every framework callback does first: join (or start) the run, and let the PyTorch probe measure."""

from __future__ import annotations

from typing import Any

from .errors import report_once


def run_and_probe(run: Any, *, name: str | None, record: str | None, hooks: bool, every: int | None,
                  framework: str, fallback: str, rank: int | None = None,
                  world_size: int | None = None) -> tuple[Any, Any]:
    """The run to report to (`run`, the current one, or a new one) and the PyTorch probe, or None when `hooks`
    is off or the probe cannot start (then the callback records what `fallback` says it can). `rank` and
    `world_size`: where the framework knows them better than the environment (a spawned process)."""
    if run is None or getattr(run, "closed", False):
        from . import run as run_module

        kwargs: dict[str, Any] = {"record": record} if record is not None else {}
        if rank is not None:
            kwargs.update(rank=rank, world_size=world_size)
        run = run_module.start(name, **kwargs)
    if not hooks:
        return run, None
    try:
        from . import torch as accmon_torch

        probe = accmon_torch.install(run, every=every)
    except Exception as exc:
        report_once(f"{framework}-torch", f"the PyTorch probe is off ({type(exc).__name__}: {exc}); accmon records {fallback}")
        return run, None
    # The flag the probe reads to leave epoch counting to the framework: loaders that read ahead
    # (Lightning's fetcher, accelerate's) run out a batch before the epoch's last step.
    probe.epochs_from_framework = True
    # A stop (probe/stop.py) goes through the framework's own flag, set by its callback: an exception out of
    # optimizer.step() would reach the framework's Ctrl-C handling instead (Lightning's exits with 1).
    probe.raise_stop = False
    return run, probe
