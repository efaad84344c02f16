"""What every framework callback shares (keras.py, lightning.py, hf.py): its arguments, the run it reports to and
the PyTorch probe that measures, and the steps each takes with them — the framework's name in the facts, the
epoch, what the probe measures itself, a resumed training, the stop door."""

from __future__ import annotations

from typing import Any

from . import run as run_module
from .errors import report_once
from .stop import StopOn, parse_stop_on


def run_and_probe(run: Any, *, name: str | None, record: str | None, hooks: bool, every: int | None,
                  framework: str, fallback: str, rank: int | None = None,
                  world_size: int | None = None) -> tuple[Any, Any]:
    """The run to report to (`run`, the current one, or a new one) and the PyTorch probe, or None when `hooks`
    is off or the probe cannot start (then the callback records what `fallback` says it can). `rank` and
    `world_size`: where the framework knows them better than the environment (a spawned process)."""
    if run is None or getattr(run, "closed", False):
        kwargs: dict[str, Any] = {"record": record} if record is not None else {}
        if rank is not None:
            kwargs.update(rank=rank, world_size=world_size)
        run = run_module.start(name, **kwargs)
    if not hooks:
        return run, None
    try:
        from . import torch as accmon_torch  # here: a callback with hooks=False never imports torch for it

        probe = accmon_torch.install(run, every=every)
    except Exception as exc:
        report_once(f"{framework}-torch", f"the PyTorch probe is off ({type(exc).__name__}: {exc}); accmon records {fallback}")
        return run, None
    # The framework gives the epochs (its loaders read ahead) and opens its own door for a stop.
    probe.hand_over(epochs=True, stop=True)
    return run, probe


class FrameworkCallback:
    """The part of the Keras, Lightning and Hugging Face callbacks that is the same for all three. A mixin: each
    callback class also derives from its framework's own callback class (and defines no `__init__` here, so
    that the framework's runs as before)."""

    # The framework's name in the facts ("keras", "lightning", "transformers"), and the prefix of its one-time
    # warnings ("keras", "lightning", "hf").
    framework_name = ""
    warn_prefix = ""

    run: Any
    probe: Any
    every: int | None
    stop_on: StopOn | None
    _framework_sent: bool

    def _configure(self, run: Any, every: int | None, stop_on: str | list[str] | None) -> None:
        """Check the arguments every callback takes, now, so that a mistake fails before training starts."""
        if run is not None and not hasattr(run, "log_columns"):
            raise TypeError(f"run must be an accmon Run (accmon.probe.start()); got {type(run).__name__}")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of steps; got {every!r}")
        # Alerts that stop the training (probe/stop.py); a wrong id is a StopOnError naming the known ids.
        self.stop_on = parse_stop_on(stop_on)
        self.run = run
        self.every = every
        self.probe = None
        self._framework_sent = False

    def _join(self, *, name: str | None, record: str | None, hooks: bool, fallback: str, **where: Any) -> None:
        """Join (or start) the run and put the PyTorch probe on, unless both are already there and open."""
        if self.probe is None or self.run is None or getattr(self.run, "closed", False):
            self.run, self.probe = run_and_probe(self.run, name=name, record=record, hooks=hooks, every=self.every,
                                                 framework=self.warn_prefix, fallback=fallback, **where)
        self._arm_stop()

    def _arm_stop(self) -> None:
        """The callback's `stop_on` becomes the run's (the I/O thread reads it)."""
        if self.stop_on is not None:
            self.run.stop_on = self.stop_on

    def _say_framework(self) -> None:
        """The framework's name in the facts, once, after the probe's own facts (framework "torch", sent at its
        first step)."""
        if not self._framework_sent and (self.probe is None or self.probe.facts_sent):
            self._framework_sent = True
            self.run.set_facts(framework=self.framework_name)

    def _not_measured(self, values: dict[str, Any], also: tuple[str, ...] = ()) -> dict[str, Any]:
        """The framework's values the probe does not measure itself (its own measurement of the same thing
        stands), and none of `also`."""
        measured = self.probe.measures() if self.probe is not None else set()
        return {k: v for k, v in values.items() if k not in measured and k not in also}

    def _set_epoch(self, epoch: int, *, changes_only: bool = False) -> None:
        """Give the probe the framework's epoch (`changes_only`: only when it is news, for a call every step)."""
        probe = self.probe
        if probe is None:
            return
        try:
            if changes_only:
                probe.follow_epoch(epoch)
            else:
                probe.set_epoch(epoch)
        except Exception as exc:
            report_once(f"{self.warn_prefix}-epoch", f"epoch numbers are off ({type(exc).__name__}: {exc})")

    def _note_resumed(self, global_step: int) -> None:
        """A training resumed from a checkpoint: the framework's step count goes on, the probe's starts at 0."""
        probe = self.probe
        if probe is not None and global_step > 0 and probe.step < global_step - 1:
            report_once(f"{self.warn_prefix}-resumed", f"training resumes at global step {global_step}; accmon "
                        "numbers the steps of this process from 0")

    def _stop_now(self, step: int) -> bool:
        """Whether the framework's door is to be opened after `step`: the run's stop, honoured there (every rank
        of a job at the same step; probe/stop.py)."""
        try:
            return self.run.honour_stop(step) is not None
        except Exception as exc:
            report_once(f"{self.warn_prefix}-stop", f"could not stop the training ({type(exc).__name__}: {exc})")
            return False
