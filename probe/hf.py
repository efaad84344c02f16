"""accmon.probe.hf: the Hugging Face `transformers.Trainer`, observed.

No code change: `accmon run -- python train.py`. Every `Trainer` the script makes gets an `AccmonCallback`.
Or, explicitly::

    from accmon.probe.hf import AccmonCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[AccmonCallback()])

The callback starts the run if none is running and puts the PyTorch probe (accmon.probe.torch) on the
training: every optimizer step is measured — loss, accuracy, gradients, activations — where the Trainer only
logs a mean every `logging_steps` (500 by default). On top of it the callback gives what only the Trainer
knows:

- steps: step s is the Trainer's `global_step` s+1 (the Trainer counts finished steps from 1; accmon numbers
  steps from 0, as the probe does); epochs: the Trainer's epoch (its `epoch` progress 1.5 is epoch 1);
- `on_log` and `on_evaluate` values fill what the probe could not measure itself: `loss`, `eval_loss` →
  `val_loss`, `eval_accuracy` (from `compute_metrics`) → `val_acc` (names: accmon.probe.metric_names);
- facts: batch size, epochs, gradient accumulation, learning-rate schedule, rank and world size.

With `AccmonCallback(hooks=False)` the probe stays off and accmon records what the Trainer logs, as it
logs it (every `logging_steps`).

Coexistence with the PyTorch probe: the probe owns the run's step rows; the callback only adds to them through
the probe (`log`, `log_eval`, `set_epoch`), so no step is counted twice.
Importing this module does not import transformers: the callback class is made when first asked for.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .autorun import when_imported
from .errors import report_once
from .integration import FrameworkCallback
from .metric_names import Mapping, map_tag


class _Hooks(FrameworkCallback):
    """The callback's behaviour; mixed into a `transformers.TrainerCallback` subclass by `callback_class()`."""

    framework_name = "transformers"
    warn_prefix = "hf"

    def __init__(self, *, run: Any = None, hooks: bool = True, name: str | None = None, record: str | None = None,
                 every: int | None = None, stop_on: str | list[str] | None = None) -> None:
        self._configure(run, every, stop_on)
        self.hooks = hooks
        self.name = name
        self.record = record
        self._mapped: dict[str, str] = {}
        self._started = False
        self._row: tuple[int, dict[str, float]] | None = None  # hooks=False: the newest step's values

    # ---- set-up --------------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        try:
            self._start(args, state)
        except Exception as exc:
            report_once("hf-start", f"the Trainer callback could not start ({type(exc).__name__}: {exc}); "
                        "training goes on without it")

    def _start(self, args: Any, state: Any) -> None:
        self._join(name=self.name, record=self.record, hooks=self.hooks, fallback="what the Trainer logs")
        self._started = True
        facts: dict[str, Any] = {"framework": "transformers", "transformers": _trainer_facts(args, state)}
        steps = _epoch_steps(args, state)
        if steps:
            facts["epoch_steps"] = steps
        self.run.set_facts(**facts)
        self._note_resumed(state.global_step)

    # ---- steps and epochs ----------------------------------------------------------------------------------
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._trainer_epoch(state)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # accelerate's loaders read one batch ahead: the probe sees the loader run out a step before the
        # epoch ends. The Trainer's own epoch count is the one to trust.
        self._trainer_epoch(state)

    def _trainer_epoch(self, state: Any) -> None:
        epoch = state.epoch  # progress: 1.5 is half-way through epoch 1
        if isinstance(epoch, (int, float)) and math.isfinite(epoch):
            self._set_epoch(int(epoch), changes_only=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._say_framework()
        run = self.run
        if run is not None and run.stop_request is not None:  # --stop-on (probe/stop.py): one read a step
            self._stop_here(args, state, control)

    def _stop_here(self, args: Any, state: Any, control: Any) -> None:
        """The Trainer's own door: `control.should_training_stop` ends train() after this step, and
        `should_save` has it write a checkpoint first, unless the user's `save_strategy` is "no"."""
        if self._stop_now(int(state.global_step)):
            control.should_training_stop = True
            if str(getattr(getattr(args, "save_strategy", None), "value", getattr(args, "save_strategy", ""))) != "no":
                control.should_save = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        steps = _epoch_steps(args, state)
        if steps and self.run is not None:
            # Again, after the probe's guess from its loader (one short, see on_step_begin).
            self.run.set_facts(epoch_steps=steps)

    # ---- what the Trainer logs -----------------------------------------------------------------------------
    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not self._started:
            return
        try:
            values = self._map(logs, val=False)
            if values:
                self._record(state, values, val=False)
        except Exception as exc:
            report_once("hf-log", f"the Trainer's logged values are not recorded ({type(exc).__name__}: {exc})")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if not metrics or not self._started:
            return
        try:
            values = self._map(metrics, val=True)
            if values:
                self._record(state, values, val=True)
        except Exception as exc:
            report_once("hf-eval", f"the evaluation results are not recorded ({type(exc).__name__}: {exc})")

    def _map(self, logs: dict[str, Any], val: bool) -> dict[str, float]:
        best: dict[str, tuple[int, float]] = {}
        for key, v in logs.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if val and not key.startswith("eval_"):
                continue  # `epoch` and friends: not validation results
            if not val and (key.startswith("eval_") or key.startswith("train_")):
                continue  # the end-of-training summary: train_loss is the mean over the whole run
            m = map_tag(key, "val" if val else None)
            if not isinstance(m, Mapping):
                continue
            if val != m.name.startswith("val_"):
                continue
            self._mapped[key] = m.name
            if m.name not in best or m.rank < best[m.name][0]:
                best[m.name] = (m.rank, float(v))
        return {k: v for k, (_, v) in best.items()}

    def _record(self, state: Any, values: dict[str, float], val: bool) -> None:
        probe = self.probe
        if probe is not None:
            # The probe measures these at every step itself; the Trainer's windowed means would only blur them.
            values = self._not_measured(values, also=("lr", "grad_norm", "epoch"))
            if not values:
                return
            if val:
                probe.log_eval(**values)
            else:
                probe.log(**values)
            return
        if "epoch" in values:
            # The Trainer logs progress (1.5 = half-way through the second epoch): the 0-based epoch in progress.
            values["epoch"] = float(max(math.ceil(values["epoch"]) - 1, 0))
        # Held until the next step: the evaluation that follows a step's log joins the same row.
        step = max(int(state.global_step) - 1, 0)
        if self._row is not None and self._row[0] != step:
            self._send_row()
        if self._row is None:
            self._row = (step, {})
        self._row[1].update(values)

    def _send_row(self) -> None:
        if self._row is not None and self.run is not None and not self.run.closed:
            self.run.log(self._row[0], **self._row[1])
        self._row = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        try:
            if self.probe is not None:
                self.probe.flush()
            self._send_row()
            if self._mapped and self.run is not None and not self.run.closed:
                self.run.set_facts(transformers_metrics=dict(self._mapped))
        except Exception as exc:
            report_once("hf-end", f"the Trainer callback failed at the end ({type(exc).__name__}: {exc})")


def _epoch_steps(args: Any, state: Any) -> int | None:
    """Optimizer steps per epoch, from the Trainer's plan (None when it trains by max_steps alone)."""
    epochs = getattr(args, "num_train_epochs", None)
    max_steps = getattr(state, "max_steps", 0) or 0
    if getattr(args, "max_steps", -1) and getattr(args, "max_steps", -1) > 0:
        return None
    if not isinstance(epochs, (int, float)) or epochs <= 0 or max_steps <= 0:
        return None
    steps = max_steps / epochs
    return int(round(steps)) if float(epochs).is_integer() else None


def _trainer_facts(args: Any, state: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for key in ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                "learning_rate", "weight_decay", "warmup_steps", "logging_steps", "world_size", "process_index",
                "seed", "max_grad_norm"):
        v = getattr(args, key, None)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            facts[key] = v
    for key in ("lr_scheduler_type", "eval_strategy", "optim"):
        v = getattr(args, key, None)
        if v is not None:
            facts[key] = str(getattr(v, "value", v))
    facts["total_steps"] = int(getattr(state, "max_steps", 0) or 0)
    version = getattr(sys.modules.get("transformers"), "__version__", None)
    if isinstance(version, str):
        facts["version"] = version
    return facts


# ---- the callback class, made on first use ---------------------------------------------------------------------
_class: type | None = None


def callback_class() -> type:
    """`AccmonCallback`: a `transformers.TrainerCallback` (imports transformers)."""
    global _class
    if _class is None:
        try:
            from transformers import TrainerCallback
        except ImportError:
            raise ImportError("accmon.probe.hf needs transformers: pip install 'accmon[hf]'") from None
        _class = type("AccmonCallback", (_Hooks, TrainerCallback), {
            "__doc__": "Observe this Trainer's training with accmon (see accmon.probe.hf).",
            "__module__": __name__,
        })
    return _class


def __getattr__(name: str) -> Any:
    if name == "AccmonCallback":
        return callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- zero-code mode --------------------------------------------------------------------------------------------
_TRAINER_MODULE = "transformers.trainer"


def install(run: Any) -> None:
    """Give every Trainer made from now on an AccmonCallback for `run` (what `accmon run` does). Idempotent.

    `import transformers` is lazy and so is this: the Trainer is patched when the script first imports it.
    """
    when_imported(_TRAINER_MODULE, lambda name: _patch(sys.modules[name], run))


def _patch(module: Any, run: Any) -> None:
    try:
        trainer_cls = module.Trainer
        if getattr(trainer_cls.__init__, "__accmon_wrapper__", False):
            return
        original = trainer_cls.__init__
        cb_cls = callback_class()

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            try:
                if not any(isinstance(c, _Hooks) for c in self.callback_handler.callbacks):
                    self.add_callback(cb_cls(run=run))
            except Exception as exc:
                report_once("hf-install", f"no accmon callback on this Trainer ({type(exc).__name__}: {exc})")

        __init__.__wrapped__ = original  # type: ignore[attr-defined]
        __init__.__accmon_wrapper__ = True  # type: ignore[attr-defined]
        __init__.__doc__ = original.__doc__
        trainer_cls.__init__ = __init__
    except Exception as exc:
        report_once("hf-install", f"the Hugging Face Trainer is not instrumented ({type(exc).__name__}: {exc})")
