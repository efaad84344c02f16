"""weights_not_updating: the model being trained does not change, for one of five reasons."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import Finding, Rule, ended, num
from .health import Health
from .learning_rate import current_lr
from .state import RunState
from .thresholds import LR_ZERO_STEPS, NO_STEP_CALLS, UNCHANGED_SAMPLES, UNCHANGED_STEPS

ID = "weights_not_updating"


class WeightsNotUpdating(Rule):
    ids = (ID,)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        out = [self._optimizer_params(st), self._frozen(st), self._lr_zero(st, h), self._no_step(st, h),
               self._symmetric(st)]
        # Weights also stop moving in a network a too-high rate has broken (dead units, NaN): that is the
        # finding, not this one.
        explained = any(f is not None and f.active for f in out) or st.explained_by_lr or st.broken \
            or st.is_active("dead_relu")
        out.append(self._unchanged(st, h, explained))
        return [f for f in out if f is not None]

    def _optimizer_params(self, st: RunState) -> Finding | None:
        opts = st.optimizers
        covers = [c for c in (o.get("covers_model") for o in opts) if isinstance(c, (int, float))]
        if not covers or len(covers) < len(opts):
            return None
        if max(covers) > 0:
            partial = self._partial(st, opts)
            return partial if partial is not None else ended(ID, "optimizer_params")
        trainable = st.model.get("trainable_params")
        return Finding(ID, True, "optimizer_params", "critical",
                       f"the optimizer holds none of the model's {trainable if trainable is not None else ''} "
                       "trainable parameters: optimizer.step() changes nothing the model uses".replace("  ", " "),
                       {"covers_model": 0.0, "optimizer_params": [o.get("params") for o in opts],
                        "model_trainable_params": trainable},
                       "build the optimizer from this model's parameters, e.g. torch.optim.Adam(model.parameters()), "
                       "after the model is final (moved to its device, layers replaced); not from another model or a copy")

    def _partial(self, st: RunState, opts: list[dict]) -> Finding | None:
        """An optimizer holds part of the model and parameters the model no longer has: a layer replaced after
        the optimizer was built (a new head). The new layer never moves. (An optimizer over a subset alone,
        such as the head of a model left trainable, is a choice and not flagged.)"""
        trainable = st.model.get("trainable_params")
        if not isinstance(trainable, int) or trainable <= 0:
            return None
        for o in opts:
            c, held = o.get("covers_model"), o.get("params")
            if not isinstance(c, (int, float)) or not isinstance(held, int) or not 0 < c < 1:
                continue
            missing = round((1 - c) * trainable)
            stale = held - round(c * trainable)
            if missing > 0 and stale > 0:
                return Finding(ID, True, "optimizer_params", "warning",
                               f"{missing} of the model's {trainable} trainable parameters ({1 - c:.0%}) are in no "
                               f"optimizer, and the optimizer holds {stale} parameters the model no longer has: a "
                               "layer replaced after the optimizer was built never changes",
                               {"covers_model": num(c), "missing_params": missing, "stale_params": stale,
                                "optimizer_params": held, "model_trainable_params": trainable},
                               "build the optimizer after the model is final (layers replaced, moved to its device), "
                               "or add the new layer: optimizer.add_param_group({'params': new_layer.parameters()})",
                               score=1 - c)
        return None

    def _symmetric(self, st: RunState) -> Finding | None:
        """Hidden layers whose weights are all one value (all zeros, a constant init): every unit of such a layer
        computes the same output and gets the same gradient (exactly zero behind a zero layer with tanh), so the
        units never differ and the layer learns as one unit, or not at all."""
        layers = [x for x in st.model.get("layers", []) if isinstance(x, dict)]
        weighted = [x for x in layers if "constant_weight" in x]
        if len(weighted) < 2:
            return None
        hidden = [str(x.get("name")) for x in weighted[:-1] if x.get("constant_weight") is True]
        if not hidden:
            return ended(ID, "symmetric")
        return Finding(ID, True, "symmetric", "critical",
                       f"the weights of {', '.join(hidden[:4])} are all one value (all zeros or a constant "
                       "initialisation): every unit of such a layer computes the same thing and gets the same "
                       "update, so the symmetry never breaks and the layer does not learn",
                       {"layers": hidden, "constant_weight": True},
                       "initialise weights randomly (PyTorch's default, nn.init.kaiming_normal_ or xavier_uniform_); "
                       "only biases may start at zero")

    def _frozen(self, st: RunState) -> Finding | None:
        params, trainable = st.model.get("params"), st.model.get("trainable_params")
        if not isinstance(params, int) or not isinstance(trainable, int) or params == 0:
            return None
        if trainable > 0:
            return ended(ID, "frozen")
        return Finding(ID, True, "frozen", "critical",
                       f"every parameter of the model is frozen (requires_grad=False on all {params})",
                       {"params": params, "trainable_params": 0},
                       "unfreeze the layers to train: for p in model.head.parameters(): p.requires_grad = True "
                       "(and build the optimizer over them)")

    def _lr_zero(self, st: RunState, h: Health) -> Finding | None:
        s = st.col("lr")
        if s is None:
            return None
        v = s.window(h.now, LR_ZERO_STEPS)[1]
        if len(v) < LR_ZERO_STEPS:
            return None
        if any(v):
            return ended(ID, "lr_zero")
        return Finding(ID, True, "lr_zero", "critical",
                       f"the learning rate has been 0 for {LR_ZERO_STEPS} steps and more: no step changes the weights",
                       {"lr": 0.0, "steps": LR_ZERO_STEPS},
                       "set a non-zero learning rate; check the scheduler (a decay or warm-up that reaches 0, "
                       "a LambdaLR returning 0, a scheduler stepped per batch instead of per epoch)")

    def _no_step(self, st: RunState, h: Health) -> Finding | None:
        pending = st.facts.get("pending_loss_calls")
        batches = None
        if isinstance(pending, int) and not isinstance(pending, bool):
            batches = pending
        elif st.ended is not None and st.last_step <= 0:
            # A run that ended with at most one step, though many batches went through the loss: the probe
            # counts steps by optimizer.step(), and none came.
            shape = st.fact("predictions", "shape")
            batch = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None
            if batch:
                batches = int(st.hist_samples() // batch)
        if batches is None:
            return None
        if batches < NO_STEP_CALLS:
            return ended(ID, "no_step")
        return Finding(ID, True, "no_step", "critical",
                       f"no optimizer step: {batches} batches went through the model and the loss, but "
                       "optimizer.step() never ran",
                       {"loss_calls_without_step": batches},
                       "call optimizer.step() after loss.backward() in every iteration, and optimizer.zero_grad() "
                       "before the next backward")

    def _unchanged(self, st: RunState, h: Health, explained: bool) -> Finding | None:
        s = st.col("update_ratio")
        if s is not None and s.n:
            end = s.end(h.now)
            start = end
            # 0/0 (a zero weight that did not move) is NaN: no update, as is an exact zero.
            while start > 0 and not (s.vals[start - 1] == s.vals[start - 1] and s.vals[start - 1] != 0):
                start -= 1
            if start == end:
                return ended(ID, "unchanged")
            if end - start < UNCHANGED_SAMPLES or s.steps[end - 1] - s.steps[start] < UNCHANGED_STEPS:
                return None  # not long enough to tell, in steps: the same at every sampling cadence
            unchanged = True
            steps = [s.steps[start]]
        else:
            norms = [series.last(h.now, UNCHANGED_SAMPLES) for _, series in st.layers("weight_norm")]
            norms = [(s_, v_) for s_, v_ in norms if len(v_) == UNCHANGED_SAMPLES]
            if not norms:
                return None
            steps = [int(s_) for s_ in norms[0][0]]
            unchanged = steps[-1] > steps[0] and all(np.ptp(v_) == 0 for _, v_ in norms)
        if not unchanged or explained:
            return ended(ID, "unchanged")
        grads = st.col("grad_norm")
        g = grads.last(h.now, 1)[1] if grads is not None else np.empty(0)
        evidence = {"samples": UNCHANGED_SAMPLES, "from_step": int(steps[0]), "lr": current_lr(st, h.now)}
        if len(g):
            evidence["grad_norm"] = num(g[-1])
        no_grad = len(g) and g[-1] == 0
        why = "the gradients are all zero" if no_grad else "the optimizer steps but nothing moves"
        return Finding(ID, True, "unchanged", "critical",
                       f"the weights have not changed since step {int(steps[0])} ({why})",
                       evidence,
                       "check that optimizer.step() runs after loss.backward(), that the optimizer holds this "
                       "model's parameters, that the learning rate is not 0, and that a GradScaler is not skipping "
                       "every step (Inf gradients)", since=int(steps[0]))
