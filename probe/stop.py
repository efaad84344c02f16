"""Stopping a run gracefully on an alert (`accmon run --stop-on`, `accmon.watch(..., stop_on=...)`).

The rules run on the I/O thread; when a new alert matches the run's `stop_on`, the I/O thread sets
`Run.stop_request`. The training side honours it at the next step boundary through the framework's own door
(plain PyTorch: `StopTraining` raised from the optimizer-step hook; Lightning `trainer.should_stop`, HF Trainer
`control.should_training_stop`, Keras `model.stop_training`). What the training thread pays per step is one
attribute read (`run.stop_request is not None`); everything here runs once, when a stop is under way.

Ranks. Each rank's rules decide for themselves, at different moments, and a rank that leaves the loop while
another waits in a collective (DDP's all-reduce) would hang the job. So a multi-rank run agrees on the step:
the rank that decides writes the request to the job's TCP store (torchrun's, at MASTER_ADDR:MASTER_PORT), every
rank's I/O thread looks for it there (`StoreLink.poll`, at most every STORE_POLL_S), and the training threads
stop only at a step boundary where all of them arrive together (`StoreLink.agree`): each counts itself in at
its boundary and waits up to HOLD_S for the others; if one does not come (it is inside the next step's
collective, waiting for us), everyone at that boundary goes on one more step and tries again. A rank waiting at
a boundary holds every other rank of a DDP job at most one step away, so the second try meets.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import registry

ENV_STOP_ON = "ACCMON_STOP_ON"
# How often a rank's I/O thread (of a run with stop_on) asks the store whether another rank asked to stop: a
# thousand ranks make a thousand small requests a second to the master's store. HOLD_S is well above it.
STORE_POLL_S = 1.0
STORE_RETRY_S = 5.0  # after the store could not be reached: a connection attempt blocks the I/O thread up to 3 s
MAX_CONNECT_FAILURES = 3
HOLD_S = 2.0  # how long a rank waits at a step boundary for the other ranks to arrive
MAX_ROUNDS = 6  # boundaries tried before a rank stops alone (ranks that share no collective never meet)
STORE_TIMEOUT_S = 3.0


class StopTraining(KeyboardInterrupt):
    """Raised from the optimizer's step (plain PyTorch) when accmon stops the run (`--stop-on`, the viewer).

    A subclass of KeyboardInterrupt, so that a script which saves a checkpoint on Ctrl-C saves it here too::

        try:
            for batch in loader: ...
        except KeyboardInterrupt:        # Ctrl-C, or accmon.StopTraining
            torch.save(model.state_dict(), "last.pt")

    `stopped` is what the run's end frame records: {"by": "alert", "reason": "nan_loss: ...", ...}."""

    def __init__(self, stopped: dict[str, Any]) -> None:
        self.stopped = dict(stopped)
        super().__init__(f"stopped by accmon: {stopped.get('reason') or stopped.get('by')}")


class StopOnError(ValueError):
    """A `stop_on` that names no alert id or severity accmon knows."""


@dataclass(frozen=True)
class StopOn:
    """Which alerts stop the run: these ids, and every alert of `severity` or worse (None: no severity)."""

    ids: frozenset[str]
    severity: str | None = None

    def matches(self, alert: Any) -> bool:
        if not isinstance(alert, dict) or alert.get("state") == "cleared":
            return False
        if alert.get("id") in self.ids:
            return True
        if self.severity is None:
            return False
        from .rules import severity_rank

        return severity_rank(alert.get("severity")) >= severity_rank(self.severity)

    def __str__(self) -> str:
        return ",".join(sorted(self.ids) + ([self.severity] if self.severity else []))


def parse_stop_on(spec: str | Iterable[str] | StopOn | None) -> StopOn | None:
    """`"nan_loss,lr_too_high"`, `["nan_loss"]` or `"critical"` (that severity or worse) as a StopOn; None for
    nothing. Raises StopOnError naming the known ids for anything else."""
    if spec is None or isinstance(spec, StopOn):
        return spec
    words = spec.split(",") if isinstance(spec, str) else [str(w) for w in spec]
    words = [w.strip() for w in words if w and w.strip()]
    if not words:
        return None
    from .rules import ALERT_IDS, SEVERITIES, severity_rank

    ids: set[str] = set()
    severities: list[str] = []
    unknown: list[str] = []
    for w in words:
        if w in SEVERITIES:
            severities.append(w)
        elif w in ALERT_IDS:
            ids.add(w)
        else:
            unknown.append(w)
    if unknown:
        raise StopOnError(
            f"unknown alert id{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} in stop_on; "
            f"known ids: {', '.join(sorted(ALERT_IDS))}; or a severity ({', '.join(SEVERITIES)}: that severity or worse)")
    severity = min(severities, key=severity_rank) if severities else None  # the least severe named: the widest
    return StopOn(frozenset(ids), severity)


def alert_stop(alert: dict[str, Any]) -> dict[str, Any]:
    """The end frame's `stopped` for a run stopped by `alert` (the I/O thread adds the step it stopped at)."""
    message = str(alert.get("message") or "").strip()
    reason = f"{alert.get('id')}: {message}" if message else str(alert.get("id"))
    stop: dict[str, Any] = {"by": "alert", "reason": reason[:200], "alert": str(alert.get("id"))[:64]}
    if isinstance(alert.get("step"), int):
        stop["alert_step"] = alert["step"]
    return stop


def stop_note_path(launch: str, rank: int | None = None) -> str | None:
    """Where a rank of `accmon run`'s command `launch` notes that --stop-on stopped it (rank None: the glob)."""
    if not launch or not all(c.isalnum() or c in "-_" for c in launch):
        return None
    return os.path.join(registry.runtime_dir(), f"{launch}.stopped.{'*' if rank is None else rank}")


class StoreLink:
    """The ranks' shared view of a stop, through the job's TCP store (see the module docstring).

    Two clients: the I/O thread's (`poll`, `publish`) and the training thread's (`agree`), made when first used;
    a TCPStore client is one socket and must not be shared between threads."""

    def __init__(self, run_id: str, rank: int, world_size: int, addr: str, port: int) -> None:
        self.key = f"accmon/stop/{run_id}"
        self.rank = rank
        self.world_size = world_size
        self.addr, self.port = addr, port
        self._io: Any = None
        self._train: Any = None
        self._last_poll = 0.0
        self._failures = 0
        self.broken = False
        self.rounds = 0
        self._asked: tuple[int, bool] | None = None  # the last step agree() was asked about, and its answer

    @classmethod
    def from_env(cls, run_id: str, rank: int, world_size: int, env: dict[str, str]) -> StoreLink | None:
        addr, port = env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
        if world_size <= 1 or not addr or not port.isdigit():
            return None
        return cls(run_id, rank, world_size, addr, int(port))

    def _client(self) -> Any:
        import datetime
        import sys

        if "torch" not in sys.modules:
            raise LookupError("torch is not imported")  # never import torch for this: only a process that did
        from torch.distributed import TCPStore

        try:
            return TCPStore(self.addr, self.port, None, False, datetime.timedelta(seconds=STORE_TIMEOUT_S),
                            wait_for_workers=False)
        except Exception:
            # Not up yet (a process group's store starts with rank 0), or not there at all: a few tries, spaced.
            self._failures += 1
            self._last_poll = time.monotonic() + STORE_RETRY_S
            if self._failures >= MAX_CONNECT_FAILURES:
                self.broken = True
            raise

    # -- the I/O thread's side ------------------------------------------------------------------------------
    def publish(self, stop: dict[str, Any]) -> None:
        """Tell every rank (the first request written wins, so all ranks record the same reason)."""
        try:
            if self._io is None:
                self._io = self._client()
            self._io.compare_set(self.key, "", json.dumps(stop))
        except Exception:
            self.broken = True

    def poll(self) -> dict[str, Any] | None:
        """Another rank's request, when there is one (asks the store at most every STORE_POLL_S)."""
        now = time.monotonic()
        if self.broken or now - self._last_poll < STORE_POLL_S:
            return None
        self._last_poll = now
        try:
            if self._io is None:
                self._io = self._client()
            if not self._io.check([self.key]):
                return None
            stop = json.loads(self._io.get(self.key))
            return stop if isinstance(stop, dict) and isinstance(stop.get("by"), str) else None
        except Exception:
            return None  # torch not imported yet, or the store not up yet: ask again later

    # -- the training thread's side -------------------------------------------------------------------------
    def agree(self, step: int) -> bool:
        """At the boundary after `step`: True when every rank stops here, False to go on one more step."""
        if self.broken or self.rounds >= MAX_ROUNDS:
            return True
        if self._asked is not None and self._asked[0] == step:
            return self._asked[1]  # asked again at the same step (a framework's batch end without an optimizer step)
        try:
            if self._train is None:
                self._train = self._client()
            store = self._train
            count, decision = f"{self.key}/at/{step}/n", f"{self.key}/at/{step}/go"
            if store.add(count, 1) >= self.world_size:
                verdict = store.compare_set(decision, "", "stop")  # unless a rank gave up waiting first
            else:
                deadline = time.monotonic() + HOLD_S
                while not store.check([decision]) and time.monotonic() < deadline:
                    time.sleep(0.005)
                verdict = store.compare_set(decision, "", "on")  # the decision, or ours: one more step
        except Exception:
            self.broken = True
            return True
        stop = (verdict.decode() if isinstance(verdict, bytes) else str(verdict)) == "stop"
        self._asked = (step, stop)
        if not stop:
            self.rounds += 1
        return stop
