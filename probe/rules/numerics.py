"""nan_loss: the loss, or the gradients that train on it, went NaN or Inf."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .base import Finding, Rule, ended, num
from .health import Health
from .series import Series
from .state import RunState
from .thresholds import NONFINITE_GRAD_STREAK

FIX = ("lower the learning rate (10x to start) and clip gradients (torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)); "
       "compute losses from logits with the fused functions (F.cross_entropy, nn.BCEWithLogitsLoss) instead of "
       "log(softmax(x)) or log(sigmoid(x)); look for log(0), division by zero or sqrt of 0 in custom code and for "
       "NaN/Inf in the inputs")


def episode_start(series: Series, now: int, span: int, first_ever: int | None) -> tuple[int, float]:
    """Step and value where the current stretch of non-finite values began: after the last `span` finite values
    in a row (the gap that ended the previous episode), or the first ever when no such gap is in memory."""
    steps, vals = series.upto(now)
    bad = np.flatnonzero(~np.isfinite(vals))
    gaps = np.flatnonzero(np.diff(bad) > span)
    k = int(bad[gaps[-1] + 1]) if len(gaps) else int(bad[0])
    if not len(gaps) and series.total > series.n and first_ever is not None:  # its start fell out of memory
        return first_ever, float(vals[k])
    return int(steps[k]), float(vals[k])


class NanLoss(Rule):
    ids = ("nan_loss",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        out = list(self._loss(st, h, "loss", "critical"))
        loss_bad = bool(out) and out[0].active
        if not loss_bad:
            out += self._loss(st, h, "val_loss", "warning")
        out += self._grads(st, h, loss_bad)
        return out

    def _loss(self, st: RunState, h: Health, name: str, severity: str) -> list[Finding]:
        series = st.col(name)
        if series is None:
            return []
        # Validation losses come once per evaluation; training losses every step.
        span = 3 if name == "val_loss" else max(h.window, 20)
        _, window = series.window(h.now, span)
        if not window:
            return []
        if all(map(math.isfinite, window)):
            return [ended("nan_loss", name)] if len(window) >= min(span, 3) else []
        steps, vals = series.last(h.now, span)
        bad = ~np.isfinite(vals)
        first, first_value = episode_start(series, h.now, span, st.first_nonfinite.get(name))
        what = "NaN" if np.isnan(first_value) else "Inf"
        label = "training loss" if name == "loss" else "validation loss"
        evidence = {"first_step": first, "value": num(first_value), "nonfinite_recent": int(bad.sum()),
                    "recent": len(vals)}
        before = series.upto(first - 1)[1]
        before = before[np.isfinite(before)]
        if len(before):
            evidence["last_finite_loss"] = float(before[-1])
        for extra in ("lr", "grad_norm", "update_ratio"):
            s = st.col(extra)
            if s is not None:
                v = s.upto(first)[1]
                v = v[np.isfinite(v)]
                if len(v):
                    evidence[extra] = float(v[-1])
        return [Finding("nan_loss", True, name, severity,
                        f"the {label} became {what} at step {first} ({int(bad.sum())} of the last {len(vals)} values are not finite)",
                        evidence, FIX, since=first, score=float(bad.mean()) + 0.01)]

    def _grads(self, st: RunState, h: Health, loss_bad: bool) -> list[Finding]:
        count = st.col("nonfinite_grads")
        norm = st.col("grad_norm")
        if count is not None and count.n:
            _, window = count.window(h.now, 32)
            if not any(window):
                return [ended("nan_loss", "grads")] if len(window) >= 3 else []
            steps, vals = count.last(h.now, 32)
            flags = vals > 0
        elif norm is not None and norm.n:
            _, window = norm.window(h.now, 32)
            if all(map(math.isfinite, window)):
                return [ended("nan_loss", "grads")] if len(window) >= 3 else []
            steps, vals = norm.last(h.now, 32)
            flags = ~np.isfinite(vals)
        else:
            return []
        if not len(flags):
            return []
        if loss_bad:
            return [ended("nan_loss", "grads")]  # the loss itself says it
        streak = len(flags) if flags.all() else int(np.argmin(flags[::-1]))  # trailing non-finite samples
        if streak == 0:
            return [ended("nan_loss", "grads")] if len(flags) >= 3 else []
        weights_bad = False
        for prefix in ("update_ratio", "weight_norm"):
            s = st.col(prefix)
            if s is not None:
                v = s.last(h.now, 1)[1]
                weights_bad |= bool(len(v) and not np.isfinite(v[-1]))
        # Mixed precision meets Inf gradients at its start and skips those steps; it only matters when the
        # weights took them, when it does not stop, or when nothing else shows the loss.
        loss_known = st.col("loss") is not None
        if not (weights_bad or (streak >= NONFINITE_GRAD_STREAK and (not loss_known or h.in_trouble))):
            return []
        first = int(steps[len(steps) - streak])
        evidence: dict[str, object] = {"first_step": first, "nonfinite_samples": streak, "weights_nonfinite": weights_bad}
        if count is not None and count.n:
            evidence["nonfinite_elements"] = float(count.last(h.now, 1)[1][-1])
        layers = {}
        for layer, s in st.layers("grad_norm"):
            v = s.last(h.now, 1)[1]
            if len(v) and not np.isfinite(v[-1]):
                layers[layer] = num(v[-1])
        if layers:
            evidence["layers"] = layers
        what = "and the weights took them" if weights_bad else f"in {streak} samples in a row"
        return [Finding("nan_loss", True, "grads", "critical",
                        f"gradients are NaN/Inf since step {first} {what}: the loss behind them is not finite",
                        evidence, FIX, since=first, score=float(streak))]
