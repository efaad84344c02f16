"""accmon.probe.keras: Keras 3 `Model.fit()`, observed.

Explicit::

    model.fit(x, y, callbacks=[accmon.probe.keras.AccmonCallback()])

Zero code: `install(run)` (what `accmon run` does when the script imports keras) makes every `fit()` add the
callback by itself.

On the torch backend a Keras model is a torch module and its weights are torch parameters, so the callback
drives the PyTorch probe (accmon.probe.torch): the batch loss, predictions and targets are taken where the
trainer computes the loss, gradients where the optimizer applies them, all as device tensors brought home
once per flush. On other backends the callback works from the logs Keras hands to callbacks (Keras has
already read them from the device by then).
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import keras

from .errors import report_once
from .integration import FrameworkCallback
from .run import start

# Keras loss names (and Loss classes, by their snake_case name) → the PyTorch loss whose convention the model's
# outputs follow, for accuracy: class scores (argmax), probabilities (0.5) or logits (0).
_LOSS_KINDS = {
    "sparse_categorical_crossentropy": "CrossEntropyLoss",
    "categorical_crossentropy": "CrossEntropyLoss",
    "binary_crossentropy": "BCELoss",
    "binary_focal_crossentropy": "BCELoss",
    "mean_squared_error": "MSELoss",
    "mse": "MSELoss",
    "mean_absolute_error": "L1Loss",
    "mae": "L1Loss",
    "huber": "HuberLoss",
    "kl_divergence": "KLDivLoss",
}
# Metric names in Keras logs that are accuracy.
_ACC_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


def _loss_name(loss: Any) -> str | None:
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        fn = getattr(loss, "fn", None)
        return getattr(fn, "__name__", None) or getattr(loss, "name", None)
    if callable(loss):
        return getattr(loss, "__name__", None)
    return None


def _from_logits(loss: Any) -> bool:
    if isinstance(loss, keras.losses.Loss):
        cfg = getattr(loss, "_fn_kwargs", None) or {}
        return bool(cfg.get("from_logits", False))
    return False


def torch_loss_kind(loss: Any) -> str | None:
    """The PyTorch loss kind equivalent to a Keras loss, for reading its predictions (None: unknown)."""
    name = _loss_name(loss)
    kind = _LOSS_KINDS.get(name or "")
    if kind == "BCELoss" and _from_logits(loss):
        return "BCEWithLogitsLoss"
    return kind


class _OptimizerView:
    """A Keras optimizer seen as the PyTorch probe sees torch optimizers: parameter groups of torch tensors."""

    def __init__(self, optimizer: Any, variables: list[Any]) -> None:
        self.optimizer = optimizer
        self.param_groups = [{"params": [v.value for v in variables], "lr": optimizer.learning_rate}]

    def refresh_lr(self) -> None:
        # A schedule makes a new value each step; a plain rate is a Variable the probe reads at flush time.
        self.param_groups[0]["lr"] = self.optimizer.learning_rate


class AccmonCallback(FrameworkCallback, keras.callbacks.Callback):
    """Publishes a Keras training run to accmon: per-batch loss and accuracy, validation, lr, epochs,
    gradient and weight statistics (torch backend), and facts about the model, loss and optimizer.

    `run`: the accmon run to publish to (default: the current one, or a new one).
    `every`: per-layer statistics every N steps instead of the adaptive cadence.
    `stop_on`: alert ids or a severity that end fit() through `model.stop_training` (as `accmon run --stop-on`).
    """

    framework_name = "keras"
    warn_prefix = "keras"

    def __init__(self, run: Any = None, *, every: int | None = None, budget: float | None = None,
                 stop_on: str | list[str] | None = None) -> None:
        super().__init__()
        self._configure(run, every, stop_on)
        self._run_arg = run  # the run of each fit(): this one, else the current one or a new one (on_train_begin)
        self.budget = budget
        self._owns_probe = False
        self._patched: list[tuple[Any, str]] = []
        self._opt_view: _OptimizerView | None = None
        self._prev_logs: dict[str, float] = {}
        self._batches_in_epoch = 0
        self._epoch = 0
        self._step = -1
        self._t_batch: float | None = None
        self._facts_sent = False
        self._broken = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        try:
            self.run = self._run_arg or start()  # the run already started in this process, or a new one
            self._arm_stop()
            if keras.backend.backend() == "torch":
                self._attach_torch()
        except Exception as exc:
            self._fail(exc)

    def on_train_end(self, logs: dict | None = None) -> None:
        try:
            self._detach_torch()
        except Exception as exc:
            self._fail(exc)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._prev_logs = {}
        self._batches_in_epoch = 0
        self._set_epoch(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._broken or self.run is None:
            return
        try:
            if self.probe is not None:
                self.probe.end_step()
                self._step = self.probe.step
            else:
                self._step += 1
                self._log_from_logs(logs or {})
            if not self._facts_sent:
                self._facts_sent = True
                if self.probe is not None:
                    self.probe.fix_facts(**self._facts())
                else:
                    self.run.set_facts(**self._facts())
        except Exception as exc:
            self._fail(exc)
        if self.run.stop_request is not None:  # --stop-on (probe/stop.py): one attribute read a batch
            self._stop_here()

    def _stop_here(self) -> None:
        """Keras's own door: `model.stop_training` ends fit() after this batch; the epoch's end (and the user's
        ModelCheckpoint, EarlyStopping, ...) still runs."""
        if self._stop_now(self._step):
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._broken or self.run is None:
            return
        try:
            val: dict[str, float] = {}
            for key, value in (logs or {}).items():
                if not key.startswith("val_") or not isinstance(value, (int, float)):
                    continue
                name = key[4:]
                val["acc" if name in _ACC_NAMES else name] = float(value)
            if val:
                if self.probe is not None:
                    self.probe.log_eval(**val)
                else:
                    self.run.log(self._step, **{f"val_{k}": v for k, v in val.items()})
            if (self.probe is None or self.probe.fact("epoch_steps") is None) and epoch == 0:
                self.run.set_facts(epoch_steps=self._batches_in_epoch or None)
        except Exception as exc:
            self._fail(exc)

    # -- torch backend: the PyTorch probe does the measuring ----------------------------------------------
    def _attach_torch(self) -> None:
        import accmon.probe.torch as apt

        probe = apt.active()
        if probe is None:
            probe = apt.install(self.run, every=self.every, budget=self.budget)
            self._owns_probe = True
        self.probe = probe
        probe.hand_over(epochs=False, stop=True)  # this callback stops fit() through model.stop_training
        probe.claim_facts(fixed=("model", "loss", "optimizer"), framework="keras")  # described by _facts() at the first batch
        model = self.model
        kind = torch_loss_kind(getattr(model, "loss", None))
        original_loss = model._compute_loss
        callback = self

        def _compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
            # Keras's torch losses call torch.nn.functional losses on transformed outputs (log of the
            # probabilities): the probe must see this call as one Keras loss, not as those.
            with probe.loss_scope():
                loss = original_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            if training:
                callback._batches_in_epoch += 1
                callback._observe(y_pred, y, loss, kind)
            return loss

        self._patch(model, "_compute_loss", _compute_loss)
        optimizer = model.optimizer
        original_apply = optimizer.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            view = callback._view(trainable_variables)
            if view is not None:
                view.refresh_lr()
                probe.on_opt_pre(view, (), {})  # type: ignore[arg-type]
            out = original_apply(grads, trainable_variables)
            if view is not None:
                probe.on_opt_post_keras(view)
            return out

        self._patch(optimizer, "apply", apply)

    def _observe(self, y_pred: Any, y: Any, loss: Any, kind: str | None) -> None:
        import torch

        if self.probe is None or not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            return
        if kind is None:
            kind = "UnknownKerasLoss"
        self.probe.observe(y_pred, y, loss if isinstance(loss, torch.Tensor) else None, kind=kind, train=True)

    def _view(self, trainable_variables: Any) -> _OptimizerView | None:
        if trainable_variables is None:
            return self._opt_view
        variables = list(trainable_variables)
        view = self._opt_view
        if view is None or len(view.param_groups[0]["params"]) != len(variables):
            view = self._opt_view = _OptimizerView(self.model.optimizer, variables)
            self.probe.name_parameters((v.value, _layer_of(v, self.model)) for v in variables)
        return view

    def _patch(self, obj: Any, name: str, fn: Any) -> None:
        setattr(obj, name, fn)
        self._patched.append((obj, name))

    def _detach_torch(self) -> None:
        for obj, name in reversed(self._patched):
            try:
                delattr(obj, name)  # the instance attribute goes; the class's method shows through again
            except AttributeError:
                pass
        self._patched.clear()
        if self.probe is not None:
            self.probe.flush()
            if self._owns_probe:
                import accmon.probe.torch as apt

                apt.uninstall()
        self.probe = None

    # -- other backends: what the logs say ----------------------------------------------------------------
    def _log_from_logs(self, logs: dict[str, Any]) -> None:
        """Per-batch values from Keras's running means: batch k's value is (k+1)·mean_k − k·mean_{k−1}.

        Exact for equal batch sizes; the last, smaller batch of an epoch is slightly off.
        """
        k = self._batches_in_epoch
        self._batches_in_epoch += 1
        row: dict[str, float] = {"epoch": self._epoch}
        for key, value in logs.items():
            if not isinstance(value, (int, float)) or key.startswith("val_"):
                continue
            prev = self._prev_logs.get(key)
            batch_value = float(value) if prev is None or k == 0 else (k + 1) * float(value) - k * prev
            self._prev_logs[key] = float(value)
            row["acc" if key in _ACC_NAMES else key] = batch_value
        lr = _lr_value(self.model)
        if lr is not None:
            row["lr"] = lr
        if self._t_batch is not None:
            row["step_time"] = time.perf_counter() - self._t_batch
        self.run.log(self._step, **row)

    # -- facts --------------------------------------------------------------------------------------------
    def _facts(self) -> dict[str, Any]:
        model = self.model
        layers = []
        for layer in _leaf_layers(model):
            weights = layer.weights
            layers.append({
                "name": layer.name,
                "kind": type(layer).__name__,
                "params": int(sum(math.prod(w.shape) for w in weights)),
                "trainable": bool(layer.trainable and weights),
            })
        last = layers and _leaf_layers(model)[-1]
        activation = getattr(getattr(last, "activation", None), "__name__", None) if last else None
        facts: dict[str, Any] = {
            "framework": "keras",
            "model": {
                "name": type(model).__name__ if model.name is None else model.name,
                "params": int(model.count_params()),
                "trainable_params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
                "layers": layers,
                "output_activation": {"linear": "none"}.get(activation or "", activation or "unknown"),
            },
        }
        loss = getattr(model, "loss", None)
        name = _loss_name(loss)
        if name is not None:
            facts["loss"] = {"kind": name, "from_logits": _from_logits(loss), "via": "keras"}
        opt = model.optimizer
        if opt is not None:
            group: dict[str, Any] = {}
            lr = _lr_value(model)
            if lr is not None:
                group["lr"] = lr
            try:
                cfg = opt.get_config()
            except Exception:
                cfg = {}
            for key in ("momentum", "weight_decay", "beta_1", "beta_2", "epsilon", "nesterov"):
                if isinstance(cfg.get(key), (int, float, bool)):
                    group[key] = cfg[key]
            if "beta_1" in group and "beta_2" in group:
                group["betas"] = [group.pop("beta_1"), group.pop("beta_2")]
            trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
            facts["optimizer"] = [{"kind": type(opt).__name__, "param_groups": [group], "params": trainable,
                                   "covers_model": 1.0}]
        return facts

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        report_once("keras-callback", f"the Keras probe stopped after an internal error ({type(exc).__name__}: {exc}); "
                    "training is not affected")


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        sub = getattr(layer, "layers", None)
        out.extend(_leaf_layers(layer) if sub else [layer])
    return out


def _layer_of(variable: Any, model: Any) -> str:
    """The layer part of a variable's path ("sequential/dense_1/kernel" → "dense_1")."""
    path = getattr(variable, "path", None) or getattr(variable, "name", None) or ""
    parts = str(path).split("/")
    if len(parts) > 1 and parts[0] == getattr(model, "name", None):
        parts = parts[1:]
    return "/".join(parts[:-1]) or parts[0]


def _lr_value(model: Any) -> float | None:
    """The learning rate as a Python float. Keras (other backends) already waits for the device each batch."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(opt.learning_rate))
    except Exception:
        return None


# -- zero code: every fit() gets the callback --------------------------------------------------------------
_original_fit: Any = None


def install(run: Any, *, every: int | None = None) -> None:
    """Make every `keras.Model.fit()` publish to `run` (idempotent)."""
    global _original_fit
    if _original_fit is not None:
        return
    _original_fit = keras.Model.fit
    signature = inspect.signature(_original_fit)

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
            callbacks = list(bound.arguments.get("callbacks") or [])
            if not any(isinstance(c, AccmonCallback) for c in callbacks):
                callbacks.append(AccmonCallback(run, every=every))
                bound.arguments["callbacks"] = callbacks
            args, kwargs = bound.args[1:], bound.kwargs
        except Exception as exc:  # never stand between the user and fit()
            report_once("keras-fit", f"Keras fit() is not instrumented ({exc!r})")
        return _original_fit(self, *args, **kwargs)

    keras.Model.fit = fit


def uninstall() -> None:
    global _original_fit
    if _original_fit is not None:
        keras.Model.fit = _original_fit
        _original_fit = None
