"""The facts: the model, optimizer, loss, inputs, targets and predictions as the run describes them, and the
phases of training.

A room of `TorchProbe` (state.py says how the rooms fit together).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from torch import nn

from . import classify as C
from . import facts as F
from . import losses as L
from .state import ProbeState


class FactBook(ProbeState):
    # ==== facts ===============================================================================================
    def _send_host_facts(self) -> None:
        self.sent_host_facts = True
        self._model_facts()
        self.run.set_facts(**self.facts)

    def _model_facts(self) -> dict[str, Any]:
        """The model and optimizer facts, taken (again) into self.facts; returns those taken."""
        f = self.facts
        taken: dict[str, Any] = {}
        try:
            model = self._main_model()
            if model is not None:
                self.model_ref = weakref.ref(model)
            if model is not None and "model" not in self.fixed:
                f["model"] = taken["model"] = F.model_facts(model, self.output_module)
                part = F.constant_weight_part(model, f["model"]["layers"])
                if part is not None:
                    self.cur.add(C.FactsDecoder(self._constant_facts), part[1], part[0])
                if self.inferred.get("output_activation") and f["model"]["output_activation"] == "unknown":
                    f["model"]["output_activation"] = self.inferred["output_activation"]
            opts = list(self.opt_states.keys())
            if opts and "optimizer" not in self.fixed:
                f["optimizer"] = taken["optimizer"] = [F.optimizer_facts(o, model) for o in opts]
        except Exception as exc:
            self._fail("facts", exc)
        return taken

    def _weight_facts(self, values: np.ndarray, meta: tuple[str, int]) -> None:
        key, gen = meta
        if gen != self.loss_gen:
            return  # taken for a loss that another has replaced since
        loss = self.facts.get("loss")
        if isinstance(loss, dict):
            loss[key] = [float(v) for v in values.tolist()]
            self.run.set_facts(loss=loss)

    def _constant_facts(self, spreads: np.ndarray, names: list[str]) -> None:
        """Which layers' weights hold one value (constant_weight_part), brought home by the flush."""
        model = self.facts.get("model")
        if not isinstance(model, dict):
            return
        flags = {n: bool(v == 0.0) for n, v in zip(names, spreads.tolist())}
        for layer in model.get("layers", []):
            if layer.get("name") in flags:
                layer["constant_weight"] = flags[layer["name"]]
        self.run.set_facts(model=model)

    def fix_facts(self, **facts: Any) -> None:
        """Facts a framework adapter knows better than the hooks (Keras's own model, loss, optimizer)."""
        self.facts.update(facts)
        self.fixed.update(facts)
        self.run.set_facts(**facts)

    def _send_optimizer_facts(self) -> None:
        if "optimizer" in self.fixed:
            return
        model = self.model_ref() if self.model_ref is not None else None
        self.facts["optimizer"] = [F.optimizer_facts(o, model) for o in self.opt_states.keys()]
        self.run.set_facts(optimizer=self.facts["optimizer"])

    def _main_model(self) -> nn.Module | None:
        roots = self._live_roots()
        if not roots:
            return None
        opt = self.primary_opt() if self.primary_opt is not None else None
        if opt is not None:
            ids = {id(p) for g in opt.param_groups for p in g["params"]}
            for r in roots:
                if any(id(p) in ids for p in r.parameters()):
                    return r
        return roots[0]

    def _input_facts(self, v: np.ndarray, features: Any) -> None:
        mean, std, mn, mx, fs_min, fs_max, const = (float(x) for x in v[:7])
        inputs = dict(self.facts.get("inputs", {}))
        inputs.update(min=mn, max=mx, mean=mean, std=std, features=int(features),
                      feat_std_min=_finite(fs_min), feat_std_max=_finite(fs_max),
                      const_features=int(const) if np.isfinite(const) else None)
        self.facts["inputs"] = inputs
        self.run.set_facts(inputs=inputs)

    def _target_facts(self, v: np.ndarray, gen: Any) -> None:
        if gen != self.loss_gen:
            return
        mn, mx, distinct, integral, one_hot = (float(x) for x in v[:5])
        targets = dict(self.facts.get("targets", {}))
        targets.update(min=_finite(mn), max=_finite(mx), distinct=int(distinct) if np.isfinite(distinct) else None,
                       integral=bool(integral), one_hot=bool(one_hot))
        self.facts["targets"] = targets
        update: dict[str, Any] = {"targets": targets}
        spec = self.loss_spec
        if spec is not None and spec.rule == L.REGRESS and self.rule is None:
            # A regression loss on label-like targets: score it as the classification it really is
            # (the rules flag the mismatch; accuracy still tells whether anything is learned).
            if one_hot:
                self.rule = L.ARGMAX
                update["task"] = "multiclass"
                shape = targets.get("shape") or []
                if len(shape) >= 2:
                    update["num_classes"] = int(shape[1])
            elif integral and np.isfinite(mn) and mn >= 0 and mx <= 1:
                self.rule = L.PROB
                update["task"] = "binary"
                update["num_classes"] = 2
            else:
                update["task"] = "regression"
        self.facts.update(update)
        self.run.set_facts(**update)

    def _output_facts(self, v: np.ndarray, gen: Any) -> None:
        if gen != self.loss_gen:
            return
        mn, mx, sums_one, lse_zero = (float(x) for x in v[:4])
        preds = dict(self.facts.get("predictions", {}))
        preds.update(min=_finite(mn), max=_finite(mx), rows_sum_to_one=bool(sums_one), logsumexp_zero=bool(lse_zero))
        self.facts["predictions"] = preds
        update: dict[str, Any] = {"predictions": preds}
        inferred = None
        if sums_one:
            inferred = "softmax"
        elif lse_zero:
            inferred = "log_softmax"
        elif np.isfinite(mn) and mn >= 0 and mx <= 1 and self.facts.get("task") in ("binary", "multilabel"):
            inferred = "sigmoid"
        model = self.facts.get("model")
        if inferred is not None:
            self.inferred["output_activation"] = inferred
        if isinstance(model, dict) and model.get("output_activation") in ("unknown", "none") and inferred \
                and "model" not in self.fixed:
            model = dict(model, output_activation=inferred)
            self.facts["model"] = model
            update["model"] = model
        self.run.set_facts(**update)

    def _new_phase(self, why: str, start: int | None = None, refresh: bool = False) -> None:
        """A new phase of training begins with the next step (or `start`): rules that compare with the run's
        history (best losses, where the loss started, the validation curve) start that history again from here.
        The first held-out loader evaluated from now on is the validation set (a fine-tuning phase brings its own).
        `refresh`: the model or the optimizer's parameters changed: their facts are taken again."""
        start = self.step + 1 if start is None else start
        self.val_loader = None
        phases = self.facts.setdefault("phases", [])
        if phases and phases[-1]["start"] >= start:
            return
        phases.append({"start": start, "why": why})
        self.run.set_facts(phases=list(phases))
        if refresh and self.sent_host_facts:
            self.param_layer = None  # layer names of the new parameters
            taken = self._model_facts()  # only these: a framework adapter's own facts (framework, ...) stand
            if taken:
                self.run.set_facts(**taken)
            # What had a gradient is looked at afresh: a head replaced and added to the optimizer leaves the old
            # head's parameters without one, and that is this change, not another.
            self.with_grad = None


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


