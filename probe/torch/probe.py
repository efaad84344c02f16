"""`TorchProbe`: turns what PyTorch's hooks show into statistics of training steps.

One step is one `step()` of the primary optimizer (the first one seen stepping). Between two steps the
probe sees, through hooks:

- the root model's call (a module called outside any other module): the input batch;
- activation modules' outputs;
- the loss (a loss module, or a `torch.nn.functional` loss): loss value, predictions, targets; under
  `torch.no_grad()` or with the model in `eval()`, a validation batch;
- the optimizer's step: gradients before it, weights before and after it.

Each of these adds device tensors to the step's row; nothing here reads a device value (no `.item()`,
`.tolist()`, `.cpu()`, `float(tensor)`, no branch on a tensor). Rows go to the ledger, which brings them to
the host every `flush_s` seconds in one transfer. Every hook body is guarded: an exception inside the probe is
reported once on stderr and switches that part of the probe off; training goes on untouched.

The probe is one object made of rooms of one concern each (state.py: what it holds; calls.py: module calls;
losswatch.py: losses; optwatch.py: optimizers; epochs.py: the epoch clock; factbook.py: facts and phases).
This module holds the step clock, the stop door, what integrations use, and flushing and closing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..stop import StopTraining
from .calls import CallTracking
from .epochs import EpochClock
from .factbook import FactBook
from .ledger import Decoder, Row
from .losswatch import LossWatch
from .optwatch import OptimizerWatch
from .state import FLUSH_S, _MeanDecoder, _scalar

__all__ = ["FLUSH_S", "MAX_PENDING_ROWS", "TorchProbe"]

# Rows waiting for the host at most; a flush is forced beyond it (memory stays bounded for very fast steps).
MAX_PENDING_ROWS = 2048

_perf = time.perf_counter


class TorchProbe(CallTracking, LossWatch, OptimizerWatch, EpochClock, FactBook):
    """The PyTorch side of a monitored run. Make it with `install()` or `watch()` (accmon.probe.torch)."""

    # ==== steps ===============================================================================================
    def _step_begins(self) -> None:
        """The first training forward (or loss) of a step. The last finished step's row was kept back so that a
        validation pass after it could join it; that pass is over now. When steps are slow, the row leaves
        at once: otherwise a viewer would see every step one (long) step late."""
        self.cur_started = True
        self.t_begin = _perf()
        if self.val_parts:
            self._end_val()
        ledger = self.ledger
        if ledger.rows and self.cadence.step_time >= self.flush_s:
            if ledger.in_flight is not None:
                ledger.poll()
            if ledger.start_flush(keep_last=0):
                self.t_last_flush = _perf()
                ledger.poll()

    def end_step(self) -> None:
        """Mark the end of a training step by hand (training loops with no torch.optim optimizer)."""
        if self.off:
            return
        try:
            self._end_step()
        except Exception as exc:
            self._fail("steps", exc)

    def _end_step(self) -> None:
        now = _perf()
        row = self.cur
        step = self.step + 1
        row.step = step
        row.time = time.time()
        s = row.scalars
        self._note_loader()
        if self.t_last_end is not None:
            dt = now - self.t_last_end
            if dt > 0:
                s["step_time"] = dt
                if self.step_samples:
                    s["samples_per_s"] = self.step_samples / dt
                if self.step_tokens:
                    s["tokens_per_s"] = self.step_tokens / dt
                wait = self._data_wait()
                if wait is not None:
                    s["data_wait"] = min(wait, dt)
        self.waits.clear()
        self.saw_eval = False
        self.step_tokens = 0
        if self.system_figures is not None:
            s.update(self.system_figures(step))
        if self.other_loss is not None and not self.primary_seen:
            self._loss_switch(step)
        elif self.other_loss_steps:
            self.other_loss_steps = 0
        self.primary_seen = False
        self.other_loss = None
        if self.epoch_known:
            s["epoch"] = self.epoch
        self.ledger.append(row)
        sampled = (self.grads_now, self.deep_now)
        self.step = step
        self.cur = Row(step + 1)
        self.cur_started = False
        self.step_samples = 0
        if not self.sent_host_facts:
            self._send_host_facts()
        # Flush: time-based, and keep the newest row back so a validation pass that follows it can join it.
        ledger = self.ledger
        if ledger.in_flight is not None:
            ledger.poll()
        if now - self.t_last_flush >= self.flush_s or len(ledger.rows) >= MAX_PENDING_ROWS:
            if ledger.start_flush(keep_last=1):
                self.t_last_flush = now
                ledger.poll()
        spent = self.spent + (_perf() - now)
        tiers = self.spent_tiers
        self.cadence.observe(
            None if self.t_last_end is None else now - self.t_last_end,
            max(spent - tiers["grads"] - tiers["deep"], 0.0),
            tiers,
            sampled,
        )
        self.spent = 0.0
        self.spent_tiers = {"grads": 0.0, "deep": 0.0}
        self.grads_now, self.deep_now = self.cadence.plan(step + 1)
        self.t_last_end = _perf()

    def _data_wait(self) -> float | None:
        """Seconds this step waited for its batch: the training loaders' __next__ time, or, with no DataLoader,
        the gap before the step's first forward. The gap is not used after an evaluation pass (not waiting for
        data), nor once CUDA is in use: a `loss.item()` after the optimizer step waits there for the device."""
        if self.waits:
            train = [w for key, w in self.waits.items() if key in self.train_loaders]
            return sum(train) if train else None
        if self.t_begin is None or self.t_last_end is None or self.saw_eval or self.t_begin < self.t_last_end:
            return None
        if torch.cuda.is_initialized():
            return None
        return self.t_begin - self.t_last_end

    # ==== the stop door (probe/stop.py; optwatch.on_opt_post asks for it) =================================
    def _stop_here(self) -> None:
        """A stop was asked for (probe/stop.py): at the boundary after a training step, raise StopTraining out of
        optimizer.step() — the step itself is done. Not when a framework's callback owns the door (Lightning,
        HF Trainer, Keras set their own flag), and once per step at most."""
        if not self.raise_stop or self.off or self.step == self.stop_looked_at:
            return
        self.stop_looked_at = self.step
        stop = self.run.honour_stop(self.step)
        if stop is not None:
            raise StopTraining(stop)

    # ==== explicit metrics ====================================================================================
    def log(self, **scalars: Any) -> None:
        """Custom metrics for the current step: numbers, or tensors (read at the next flush, not now).

        Between `optimizer.step()` and the next forward pass, the current step is the one just finished.
        """
        row = self.cur
        if not self.cur_started and self.ledger.rows:
            row = self.ledger.rows[-1]
        for name, v in scalars.items():
            if isinstance(v, torch.Tensor):
                dec = self.d_custom.get(name) or self.d_custom.setdefault(name, _MeanDecoder(name))
                row.add(dec, _scalar(v), 1)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                row.scalars[name] = v

    def log_eval(self, **metrics: Any) -> None:
        """Validation results computed by the script: `loss=`, `acc=` (or any `val_*` name), at the last step."""
        parts: list[tuple[Decoder, torch.Tensor, Any]] = []
        target = self.ledger.rows[-1] if self.ledger.rows else self.cur
        for name, v in metrics.items():
            full = name if name.startswith("val_") else f"val_{name}"
            if isinstance(v, torch.Tensor):
                dec = self.d_custom.get(full) or self.d_custom.setdefault(full, _MeanDecoder(full))
                parts.append((dec, _scalar(v), 1))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                target.scalars[full] = v
        target.parts.extend(parts)

    # ==== what framework integrations use (keras.py, lightning.py, hf.py) =====================================
    def measures(self) -> set[str]:
        """Which of loss, acc, val_loss and val_acc this probe measures itself: a framework's own logged values of
        those are then left out."""
        out: set[str] = set()
        if self.primary_loss is not None:
            out |= {"loss", "val_loss"}
            if self.rule is not None:
                out |= {"acc", "val_acc"}
        return out

    def claim_facts(self, fixed: Iterable[str] = (), **facts: Any) -> None:
        """Facts the framework knows (`framework="keras"`); `fixed` names facts it describes itself, which the
        probe then leaves alone."""
        self.facts.update(facts)
        self.fixed.update(fixed)

    @contextmanager
    def loss_scope(self) -> Iterator[None]:
        """Everything called inside is one loss: the functional losses a framework's loss calls are not others."""
        self.in_loss_module += 1
        try:
            yield
        finally:
            self.in_loss_module -= 1

    def hand_over(self, *, epochs: bool, stop: bool) -> None:
        """A framework's callback drives the loop. `epochs`: it gives the epochs (`set_epoch`, `follow_epoch`), and
        loaders running out no longer count them (Lightning's fetcher and accelerate's loaders read ahead and run
        dry a batch before the epoch's last step). `stop`: it opens its own door for a stop (probe/stop.py), and
        the probe no longer raises StopTraining out of optimizer.step() (an exception there would reach the
        framework's Ctrl-C handling instead)."""
        if epochs:
            self.epochs_from_framework = True
        if stop:
            self.raise_stop = False

    def follow_epoch(self, epoch: int) -> None:
        """The framework says the step in progress is in `epoch`: `set_epoch` when that is news (another epoch, or
        none known yet). Cheap enough to call every step."""
        if self.epoch != epoch or not self.epoch_known:
            self.set_epoch(epoch)

    @property
    def facts_sent(self) -> bool:
        """Whether the probe has sent its own facts (at its first step): a framework's facts sent after them
        stand (its `framework` name over the probe's "torch")."""
        return self.sent_host_facts

    def fact(self, key: str) -> Any:
        """One fact as the probe holds it now (None when it has none)."""
        return self.facts.get(key)

    def name_parameters(self, names: Iterable[tuple[torch.Tensor, str]]) -> None:
        """Layer names for parameters the probe cannot find in a torch module (a Keras model's variables)."""
        for tensor, layer in names:
            self.extra_names[id(tensor)] = layer

    # ==== flushing and closing ================================================================================
    def _sink(self, steps: list[int], cols: dict[str, list], hists: dict[str, list] | None, times: list[float]) -> None:
        self.run.log_columns(steps, cols, hists, times)

    def flush(self) -> None:
        """Publish everything measured so far, waiting for the device if needed (not for the training loop)."""
        if os.getpid() != self.pid:
            return
        try:
            if self.val_parts:
                self._end_val()
            self.ledger.drain()
        except Exception as exc:
            self._fail("flush", exc)

    def continue_from(self, old: TorchProbe) -> None:
        """Number steps and epochs on from `old`, a closed probe of the same run (a re-run notebook cell):
        one run's steps only ever increase."""
        if self.step >= 0 or old.run is not self.run:
            return
        self.step = old.step
        self.cur = Row(self.step + 1)
        self.grads_now, self.deep_now = self.cadence.plan(self.step + 1)
        self.epoch, self.epoch_known = old.epoch, old.epoch_known
        self.epoch_start = self.step + 1

    def close(self) -> None:
        """Publish what is pending and stop observing. Idempotent; the run itself is closed by its owner."""
        if self.closed:
            return
        self.closed = True
        if self.fmode is not None:
            self._stop_functional()
        if os.getpid() == self.pid and any(part[0] is self.d_loss for part in self.cur.parts):
            # A step that began and never reached optimizer.step() (the script crashed, or stopped after a
            # forward pass, or updates weights by hand): what it measured, a NaN loss perhaps, is kept.
            row = self.cur
            row.step, row.time = self.step + 1, time.time()
            self.ledger.append(row)
            self.step += 1
            self.cur = Row(self.step + 1)
        self.flush()
        self.off = True

