"""The epoch clock: the training loaders, the wait for their batches, epochs counted or given.

A room of `TorchProbe` (state.py says how the rooms fit together).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from . import data
from .state import ProbeState

_thread_id = threading.get_ident


class EpochClock(ProbeState):
    # ==== epochs and data =====================================================================================
    def on_batch(self, it: Any, seconds: float = 0.0) -> None:
        if self.off:
            return
        self.last_iter = weakref.ref(it)
        self.batch_fresh = True
        if self.tid == _thread_id() and len(self.waits) < 64:
            key = data.loader_key(it)
            self.waits[key] = self.waits.get(key, 0.0) + seconds

    def on_exhausted(self, it: Any) -> None:
        if self.off or self.epochs_from_framework:
            return
        try:
            if data.loader_key(it) in self.train_loaders and self.step >= self.epoch_start:
                if "epoch_steps" not in self.facts and self.epoch == 0:
                    self.facts["epoch_steps"] = self.step + 1 - self.epoch_start
                    self.run.set_facts(epoch_steps=self.facts["epoch_steps"])
                self.epoch += 1
                self.epoch_start = self.step + 1
                self.epoch_known = True
        except Exception as exc:
            self._fail("data", exc)

    def _note_loader(self) -> None:
        it = self.last_iter() if self.last_iter is not None else None
        if it is None:
            return
        key = data.loader_key(it)
        if key not in self.train_loaders:
            self.train_loaders.add(key)
            self.epoch_known = True
            # A data set of the same kind and size as the last one is taken as the same data drawn again: a
            # script that rebuilds its data set every epoch (shuffled by hand, augmented anew) is one phase.
            sig = data.source_signature(it)
            if len(self.train_loaders) > 1 and sig != self.data_sig:
                self._new_phase("training batches come from a new data source")
            self.data_sig = sig
            if len(self.train_loaders) == 1:
                self.facts.update(data.describe(it))
                if self.sent_host_facts:
                    self.run.set_facts(**data.describe(it))

    def set_epoch(self, epoch: int) -> None:
        """Give the epoch number when no DataLoader tells it (0-based)."""
        if epoch != self.epoch and "epoch_steps" not in self.facts and self.epoch == 0 and self.step >= 0:
            self.facts["epoch_steps"] = self.step + 1
            self.run.set_facts(epoch_steps=self.step + 1)
        self.epoch = int(epoch)
        self.epoch_start = self.step + 1
        self.epoch_known = True

