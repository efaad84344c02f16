"""accmon.probe.lightning: PyTorch Lightning training, observed.

No code change: `accmon run -- python train_lightning.py`. Every `Trainer` the script makes gets an
`AccmonCallback`. Or, for those who configure callbacks::

    from accmon.probe.lightning import AccmonCallback
    trainer = L.Trainer(max_epochs=10, callbacks=[AccmonCallback()])

The callback starts the run if none is running and puts the PyTorch probe (accmon.probe.torch) on the
training: it measures every optimizer step — loss, accuracy, gradients, activations — as it does for a plain
PyTorch loop. On top of it, the callback gives what only Lightning knows:

- steps are Lightning's optimizer steps (`trainer.global_step` counts the same ones: step s is the
  (s+1)-th optimizer step); epochs are `trainer.current_epoch`;
- the sanity-check validation Lightning runs before training is not taken for a validation pass;
- metrics logged with `self.log` fill what the probe could not measure itself (a custom loss it does not
  recognise, an accuracy it cannot derive): logged in a training hook, `train_loss`, `loss`, `train_acc`… become
  `loss`, `acc`; logged in a validation hook, they become `val_loss`, `val_acc` with Lightning's own epoch
  aggregation (names: accmon.probe.metric_names);
- facts: the strategy, precision, rank and world size, epochs, gradient accumulation.

With `AccmonCallback(hooks=False)` the PyTorch probe stays off and the callback logs the `self.log` metrics
and the learning rate alone (one host transfer per half second, not per step).

Coexistence with the PyTorch probe: the probe owns the step rows of the run. The callback never writes rows
of its own while the probe is on; what it adds goes through the probe (`log`, `log_eval`, `set_epoch`), into
the row of the step it belongs to. So a Lightning run under `accmon run` is counted once, whatever imported
torch first. `lightning_active()` tells the probe (or anyone) that a Lightning callback is driving the run.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from .errors import report_once
from .integration import FrameworkCallback
from .metric_names import Mapping, map_tag
from .run import mark_crash

# Half a second between host transfers in hooks=False mode: as the PyTorch probe's FLUSH_S (probe/torch/state.py).
FLUSH_S = 0.5

_TRAIN_HOOKS = ("training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward",
                "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad", "optimizer_step")
_active_callbacks: list[Any] = []  # the callbacks of trainers now fitting; the newest one collects self.log
_lock = threading.Lock()


def lightning_active() -> bool:
    """Whether a Lightning trainer with an accmon callback is fitting in this process."""
    return bool(_active_callbacks)


def _packages() -> list[Any]:
    """The Lightning packages imported in this process: `lightning.pytorch` and/or `pytorch_lightning`."""
    out = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "Callback") and hasattr(mod, "Trainer"):
            out.append(mod)
    return out


def _import_default_package() -> Any:
    # The package the script already uses, when it has imported one: importing the other here would both
    # cost seconds and, under `accmon run`, set off the import hook of a framework that is not in use.
    imported = _packages()
    if imported:
        return imported[0]
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise ImportError("accmon.probe.lightning needs PyTorch Lightning: pip install 'accmon[lightning]'") from None
    return pl


def _scalar_value(value: Any) -> Any:
    """What one `self.log` call logged, as a number or a 0-d tensor (not read from the device here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    cache = getattr(value, "_forward_cache", None)  # a torchmetrics Metric: its value for this batch
    if cache is not None:
        value = cache
    numel = getattr(value, "numel", None)
    if numel is not None and callable(numel) and numel() == 1:
        return value.detach().reshape(())
    return None


class _Hooks(FrameworkCallback):
    """The callback's behaviour, shared by the callback classes of `lightning` and `pytorch_lightning`."""

    framework_name = "lightning"
    warn_prefix = "lightning"

    def __init__(self, *, run: Any = None, hooks: bool = True, name: str | None = None, record: str | None = None,
                 every: int | None = None, stop_on: str | list[str] | None = None) -> None:
        super().__init__()
        self._configure(run, every, stop_on)
        self.hooks = hooks
        self.name = name
        self.record = record
        self._mapped: dict[str, str] = {}  # logged name → accmon name, for the facts
        self._val_names: dict[str, Mapping] = {}  # names logged in validation hooks this pass → accmon name
        self._step_vals: dict[str, tuple[int, Any]] = {}  # accmon name → (rank, value) logged this batch
        self._pending: dict[str, Any] = {}  # hooks=False: metrics of the step in progress
        self._rows: list[tuple[int, float, dict[str, Any]]] = []  # hooks=False: finished steps not yet sent
        self._row_step = -1
        self._t_flush = time.monotonic()
        self._suspended = False
        self._set_up = False
        self._spawned = False  # unpickled in a process that ddp_spawn started (see __getstate__)

    # ---- processes -----------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # `strategy="ddp_spawn"` pickles the trainer, callbacks included, into processes it spawns. The run and
        # the probe belong to this process (threads, sockets): each spawned rank starts its own in setup().
        state = dict(self.__dict__)
        state.update(run=None, probe=None, _set_up=False, _suspended=False, _framework_sent=False, _rows=[],
                     _pending={}, _step_vals={}, _spawned=True)
        return state

    # ---- set-up --------------------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        try:
            self._setup(trainer, pl_module, stage)
        except Exception as exc:
            report_once("lightning-setup", f"the Lightning callback could not start ({type(exc).__name__}: {exc}); "
                        "training goes on without it")

    def _setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        rank, world = _rank_of(trainer)
        # A spawned rank (ddp_spawn) knows its rank from Lightning alone: no RANK in its environment.
        where = {"rank": rank, "world_size": world} if self._spawned else {}
        self._join(name=self.name, record=self.record, hooks=self.hooks, fallback="what self.log logs", **where)
        _patch_log(type(pl_module))
        with _lock:
            if self not in _active_callbacks:
                _active_callbacks.append(self)
        self._set_up = True
        self.run.set_facts(framework="lightning", lightning=_trainer_facts(trainer))
        if world > 1 and (self.run.rank != rank or self.run.world_size != world):
            report_once("lightning-rank", f"Lightning says rank {rank} of {world} but the accmon run was started as "
                        f"rank {self.run.rank} of {self.run.world_size} (it started before Lightning launched its "
                        "processes); start the script with torchrun, or `accmon run -- torchrun ...`, to see every rank")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            mark_crash(exception)  # the recording says *crashed*, and why
        self._finish()

    def _finish(self) -> None:
        with _lock:
            if self in _active_callbacks:
                _active_callbacks.remove(self)
        try:
            if self._suspended:
                self._resume()
            if self.probe is not None:
                self.probe.flush()
            elif self.run is not None and not self.run.closed:
                self._end_row(None)
                self._send_rows()
            if self._mapped and self.run is not None and not self.run.closed:
                self.run.set_facts(lightning_metrics=dict(self._mapped))
        except Exception as exc:
            report_once("lightning-finish", f"the Lightning callback failed at the end ({type(exc).__name__}: {exc})")

    # ---- the sanity check ----------------------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        # Lightning validates a couple of batches before training: not a validation pass of the model being
        # trained, and it would land on step 0 as one. The probe looks away meanwhile.
        if self.probe is not None:
            from .torch import hooks

            hooks.suspend()
            self._suspended = True

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        self._resume()

    def _resume(self) -> None:
        if self._suspended:
            from .torch import hooks

            hooks.resume()
            self._suspended = False

    # ---- training ------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._note_resumed(trainer.global_step)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.probe is not None:
            _wrappers_in_training_mode(trainer)
            self._set_epoch(int(trainer.current_epoch))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        try:
            step_vals = {name: v for name, (_, v) in self._step_vals.items()}
            self._step_vals = {}
            if "loss" not in step_vals:
                # Nothing logged as the loss: the loss training_step returned stands in.
                loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
                loss = _scalar_value(loss) if loss is not None else None
                if loss is not None:
                    step_vals["loss"] = loss
            probe = self.probe
            self._say_framework()
            if probe is not None:
                extra = self._not_measured(step_vals)
                if extra:
                    probe.log(**extra)
            else:
                self._pending.update(step_vals)
                self._end_row(trainer)
        except Exception as exc:
            report_once("lightning-batch", f"the Lightning callback's step metrics are off ({type(exc).__name__}: {exc})")
        run = self.run
        if run is not None and run.stop_request is not None:  # --stop-on (probe/stop.py): one read a batch
            self._stop_here(trainer)

    def _stop_here(self, trainer: Any) -> None:
        """Lightning's own door: `trainer.should_stop` ends fit() after this batch, with the epoch's end, the
        checkpoint callbacks and teardown run as for EarlyStopping. Every rank of a job stops at the same step."""
        if self._stop_now(int(trainer.global_step)):
            trainer.should_stop = True

    # ---- validation ----------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_names = {}

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.probe is not None and not getattr(trainer, "sanity_checking", False):
            _wrappers_in_training_mode(trainer)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if getattr(trainer, "sanity_checking", False) or not self._val_names:
            return
        try:
            # Lightning's own aggregate over the pass (a mean weighted by batch size, unless the script said
            # otherwise), computed before this hook runs.
            metrics = trainer.callback_metrics
            best: dict[str, tuple[int, Any]] = {}
            for logged, m in self._val_names.items():
                v = metrics.get(logged)
                if v is None:
                    v = metrics.get(f"{logged}/dataloader_idx_0")  # several validation loaders: the first
                v = _scalar_value(v) if v is not None else None
                if v is not None and (m.name not in best or m.rank < best[m.name][0]):
                    best[m.name] = (m.rank, v)
            values = self._not_measured({k: v for k, (_, v) in best.items()})
            if not values:
                return
            if self.probe is not None:
                self.probe.log_eval(**values)
            else:
                self._pending_val(trainer, values)
        except Exception as exc:
            report_once("lightning-val", f"the Lightning callback's validation metrics are off ({type(exc).__name__}: {exc})")

    # ---- self.log ------------------------------------------------------------------------------------------
    def logged(self, module: Any, name: str, value: Any) -> None:
        """One `self.log(name, value)` call of the module being fitted (through the patched `log`)."""
        trainer = getattr(module, "_trainer", None)
        if trainer is None or getattr(trainer, "sanity_checking", False):
            return
        fx = getattr(module, "_current_fx_name", None) or ""
        if "validation" in fx:
            m = map_tag(name, "val")
            if isinstance(m, Mapping) and m.name in ("val_loss", "val_acc"):
                self._val_names[name] = m
                self._mapped[name] = m.name
            return
        if fx not in _TRAIN_HOOKS:
            return  # epoch-end hooks log aggregates; test and predict hooks are not training
        m = map_tag(name, "train")
        if not isinstance(m, Mapping) or m.name not in ("loss", "acc"):
            return
        v = _scalar_value(value)
        if v is None:
            return
        self._mapped[name] = m.name
        held = self._step_vals.get(m.name)
        if held is None or m.rank <= held[0]:
            self._step_vals[m.name] = (m.rank, v)

    # ---- hooks=False: rows of our own ----------------------------------------------------------------------
    def _end_row(self, trainer: Any) -> None:
        """Close the step in progress once Lightning has stepped the optimizer (or at the end: trainer None)."""
        step = trainer.global_step - 1 if trainer is not None else self._row_step
        if trainer is not None and step <= self._row_step:
            return  # gradient accumulation: the optimizer has not stepped yet; the batch's values join the step
        if self._pending:
            row = dict(self._pending)
            if trainer is not None:
                row["epoch"] = int(trainer.current_epoch)
                opts = getattr(trainer, "optimizers", None) or []
                if opts and opts[0].param_groups:
                    lr = opts[0].param_groups[0].get("lr")
                    if isinstance(lr, (int, float)):
                        row["lr"] = float(lr)
            self._rows.append((step, time.time(), row))
            self._pending = {}
        self._row_step = max(step, self._row_step)
        if time.monotonic() - self._t_flush >= FLUSH_S:
            self._send_rows(keep_last=True)

    def _pending_val(self, trainer: Any, values: dict[str, Any]) -> None:
        step = trainer.global_step - 1
        if self._rows and self._rows[-1][0] == step:
            self._rows[-1][2].update(values)
        else:
            self._rows.append((max(step, 0), time.time(), dict(values)))

    def _send_rows(self, keep_last: bool = False) -> None:
        rows = self._rows[:-1] if keep_last else self._rows
        self._t_flush = time.monotonic()
        if not rows:
            return
        self._rows = self._rows[len(rows):]
        names = sorted({k for _, _, r in rows for k in r})
        tensors = [(i, k) for i, (_, _, r) in enumerate(rows) for k in names if k in r and not isinstance(r[k], (int, float))]
        read: dict[tuple[int, str], float] = {}
        if tensors:
            import torch

            # The one place the host waits for the device, once per FLUSH_S: every value of these steps together.
            stacked = torch.stack([rows[i][2][k].float().to("cpu", non_blocking=False) for i, k in tensors])
            for (i, k), v in zip(tensors, stacked.tolist()):
                read[(i, k)] = v
        cols = {k: [read.get((i, k), r.get(k)) if k in r else None for i, (_, _, r) in enumerate(rows)] for k in names}
        self.run.log_columns([s for s, _, _ in rows], cols, times=[t for _, t, _ in rows])


def _wrappers_in_training_mode(trainer: Any) -> None:
    """Put the strategy's wrappers around the LightningModule (DistributedDataParallel and Lightning's own)
    back in training mode, their own flag only.

    Lightning's default `on_validation_model_eval` calls `trainer.model.eval()` — the outermost wrapper — but
    restores the training mode of the LightningModule's modules alone, so under DDP the wrappers stay in eval
    mode for the rest of the run. They hold no dropout or batch norm of their own (nothing computes
    differently), but the PyTorch probe reads the mode of the outermost module called to tell a training batch
    from a validation batch.
    """
    inner = getattr(trainer, "lightning_module", None)
    module = getattr(getattr(trainer, "strategy", None), "model", None)
    for _ in range(4):  # DDP → _LightningModuleWrapperBase → LightningModule: never deeper than that
        if module is None or module is inner:
            return
        if hasattr(module, "training"):
            module.training = True
        module = getattr(module, "module", None) or getattr(module, "_forward_module", None)


def _rank_of(trainer: Any) -> tuple[int, int]:
    return int(getattr(trainer, "global_rank", 0) or 0), int(getattr(trainer, "world_size", 1) or 1)


def _trainer_facts(trainer: Any) -> dict[str, Any]:
    rank, world = _rank_of(trainer)
    facts: dict[str, Any] = {"global_rank": rank, "world_size": world}
    for key in ("max_epochs", "max_steps", "accumulate_grad_batches", "num_nodes", "precision"):
        v = getattr(trainer, key, None)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            facts[key] = v
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None:
        facts["strategy"] = type(strategy).__name__
    version = getattr(sys.modules.get(type(trainer).__module__.split(".")[0]), "__version__", None)
    if isinstance(version, str):
        facts["version"] = version
    return facts


# ---- self.log ------------------------------------------------------------------------------------------------
def _patch_log(module_cls: type) -> None:
    """Wrap `LightningModule.log` once, so that what the script logs reaches the fitting trainer's callback."""
    base: Any = next((c for c in module_cls.__mro__ if c.__name__ == "LightningModule" and "log" in c.__dict__), None)
    if base is None or getattr(base.log, "__accmon_wrapper__", False):
        return
    original = base.log

    def log(self: Any, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        original(self, name, value, *args, **kwargs)
        callbacks = _active_callbacks
        if callbacks:
            try:
                callbacks[-1].logged(self, name, value)
            except Exception as exc:
                report_once("lightning-log", f"self.log values are not recorded ({type(exc).__name__}: {exc})")

    log.__doc__ = original.__doc__
    log.__wrapped__ = original  # type: ignore[attr-defined]
    log.__accmon_wrapper__ = True  # type: ignore[attr-defined]
    base.log = log


# ---- the callback classes ------------------------------------------------------------------------------------
_classes: dict[str, type] = {}


def callback_class(package: Any) -> type:
    """The accmon callback class for one Lightning package (`lightning.pytorch` or `pytorch_lightning`)."""
    key = package.__name__
    cls = _classes.get(key)
    if cls is None:
        cls = type("AccmonCallback", (_Hooks, package.Callback), {
            "__doc__": "Observe this Trainer's fitting with accmon (see accmon.probe.lightning).",
            "__module__": __name__,
        })
        _classes[key] = cls
    return cls


AccmonCallback = callback_class(_import_default_package())


# ---- zero-code mode ------------------------------------------------------------------------------------------
def install(run: Any) -> None:
    """Give every Trainer made from now on an AccmonCallback for `run` (what `accmon run` does). Idempotent."""
    for package in _packages():
        trainer_cls = package.Trainer
        if getattr(trainer_cls.__init__, "__accmon_wrapper__", False):
            continue
        _wrap_trainer_init(trainer_cls, callback_class(package), run)


def _wrap_trainer_init(trainer_cls: Any, cb_cls: type, run: Any) -> None:
    original = trainer_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            if not any(isinstance(c, _Hooks) for c in self.callbacks):
                self.callbacks.append(cb_cls(run=run))
        except Exception as exc:
            report_once("lightning-install", f"no accmon callback on this Trainer ({type(exc).__name__}: {exc})")

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    __init__.__accmon_wrapper__ = True  # type: ignore[attr-defined]
    __init__.__doc__ = original.__doc__
    trainer_cls.__init__ = __init__
