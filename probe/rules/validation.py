"""overfitting and val_loss_stagnating: where the validation loss goes once the training loss has fallen."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import Finding, Rule, ended
from .health import Health
from .state import RunState
from .thresholds import (
    OVERFIT_ABS_FLOOR,
    OVERFIT_ACC_GAP,
    OVERFIT_NOISE,
    OVERFIT_PERSIST,
    OVERFIT_RISE,
    OVERFIT_TRAIN_DROP,
    STAGNATION_DRIFT,
    STAGNATION_EVALS,
    STAGNATION_LEARNED,
    STAGNATION_MIN_DELTA,
)


class ValidationCurve(Rule):
    ids = ("overfitting", "val_loss_stagnating")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken:
            return []
        s = st.col("val_loss")
        if s is None:
            return []
        steps, v = s.upto(h.now)
        # A new phase (a new optimizer, a replaced head, new data) starts the validation history again.
        phase = st.phase_at(h.now)[0]
        ok = np.isfinite(v) & (steps >= phase)
        steps, v = steps[ok], v[ok]
        if len(v) < 3:
            return []
        i = int(np.argmin(v))
        best, best_step = float(v[i]), int(steps[i])
        # Batches of one class make the training loss fall whatever the model learns: no overfitting verdict then.
        over = None if st.is_active("unshuffled_data") else self._overfitting(st, h, v, i, best, best_step)
        out = [over or ended("overfitting")]
        if over is not None:
            out.append(ended("val_loss_stagnating"))  # the stronger finding says it
        else:
            out.append(self._stagnating(st, v, best, best_step, h.now) or ended("val_loss_stagnating"))
        return out

    def _overfitting(self, st: RunState, h: Health, v: np.ndarray, i: int, best: float, best_step: int) -> Finding | None:
        after = len(v) - 1 - i
        was = st.is_active("overfitting")
        if after < (2 if was else OVERFIT_PERSIST) or best <= 0 or h.loss_now is None:
            return None
        rise = float(v[-1] / best - 1)
        bar = OVERFIT_RISE / 2 if was else OVERFIT_RISE
        train_then = h.loss_near(best_step) if h.loss_near else None
        if train_then is None or train_then <= 0:
            return None
        drop = 1 - h.loss_now / train_then
        # Persistence: every evaluation since the last few is above the best, not one bump.
        persist = bool(np.all(v[-OVERFIT_PERSIST:] > best)) if not was else bool(np.all(v[-2:] > best))
        if not (rise >= bar and persist and drop >= OVERFIT_TRAIN_DROP):
            return None
        # Larger than the curve's own noise: the typical change between consecutive evaluations.
        steps_rel = np.abs(np.diff(v)) if len(v) >= 3 else np.zeros(1)
        noise = float(np.median(steps_rel)) if len(steps_rel) else 0.0
        if not was and (v[-1] - best) < OVERFIT_NOISE * noise:
            return None
        # An absolute floor for a classification loss (nats): a near-zero loss that doubles has not moved.
        classifies = st.task in ("binary", "multiclass")
        if classifies and (v[-1] - best) < OVERFIT_ABS_FLOOR:
            return None
        evidence: dict[str, object] = {"best_val_loss": best, "best_step": best_step, "val_loss": float(v[-1]), "rise": rise,
                    "evaluations_since_best": after, "train_loss_at_best": train_then, "train_loss_now": h.loss_now,
                    "val_loss_noise": noise}
        val_acc, acc = st.col("val_acc"), h.acc_now
        if val_acc is not None and acc is not None:
            va = val_acc.last(h.now, 1)[1]
            if len(va) and np.isfinite(va[-1]):
                gap = acc - float(va[-1])
                # A real gap: a model within a few points of its training accuracy on held-out data is fine.
                if gap < OVERFIT_ACC_GAP and not was:
                    return None
                evidence.update(train_acc=acc, val_acc=float(va[-1]), acc_gap=gap)
        phase, why = st.phase_at(h.now)
        if phase:
            evidence.update({"phase_start": phase, "phase_why": why or ""})
        return Finding("overfitting", True, None, "warning",
                       f"validation loss has risen {rise:.0%} since its best ({best:.4g} at step {best_step}, now "
                       f"{v[-1]:.4g}) while the training loss fell from {train_then:.4g} to {h.loss_now:.4g}: the model "
                       "is memorising the training set",
                       evidence,
                       f"stop at the best point (early stopping on the validation loss; keep the checkpoint of step "
                       f"{best_step}); add regularisation (weight decay, dropout, data augmentation); use more data "
                       "or a smaller model", since=None, score=1 + rise)

    def _stagnating(self, st: RunState, v: np.ndarray, best: float, best_step: int, now: int = 0) -> Finding | None:
        if len(v) < STAGNATION_EVALS + 1:
            return None
        before, recent = v[:-STAGNATION_EVALS], v[-STAGNATION_EVALS:]
        best_before = float(before.min())
        learned = best_before <= v[0] - STAGNATION_LEARNED * abs(v[0])
        improved = recent.min() < best_before - STAGNATION_MIN_DELTA * abs(best_before)
        if improved or not learned:
            return None
        # Flat: training on costs time but does no harm (info). Drifting up: every further epoch makes the
        # model worse, stopping is due (warning).
        drift = float(v[-1] / best - 1) if best > 0 else 0.0
        worse = drift >= STAGNATION_DRIFT
        trend = f", {drift:.0%} above its best and rising" if worse else ""
        evidence: dict[str, object] = {"best_val_loss": best, "best_step": best_step, "val_loss": float(v[-1]), "drift": drift,
                    "evaluations": STAGNATION_EVALS, "min_delta": STAGNATION_MIN_DELTA}
        phase, why = st.phase_at(now)
        if phase:
            evidence.update({"phase_start": phase, "phase_why": why or ""})
        return Finding("val_loss_stagnating", True, None, "warning" if worse else "info",
                       f"validation loss has not improved in {STAGNATION_EVALS} evaluations (best {best:.4g} at step "
                       f"{best_step}, last {v[-1]:.4g}{trend})",
                       evidence,
                       f"stop training here (early stopping; the best checkpoint is at step {best_step}), or lower "
                       "the learning rate to go on (ReduceLROnPlateau(patience=10), a cosine or step schedule)",
                       score=1.0 + 10 * max(drift, 0.0))
