"""accuracy_stuck and single_class_prediction: the symptoms a user sees first, and what they mean."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import Finding, Rule, ended
from .health import Health, chance_margin, handled_floor
from .state import RunState
from .thresholds import FLAT_ACC_DELTA, FLAT_ACC_LOW, SINGLE_CLASS_FRACTION, SKEWED_MAJORITY, START_STEPS, ZERO_ACC

ID = "accuracy_stuck"
FIXES = {
    "zero": ("accuracy 0 means predictions never match the targets: check that outputs and labels use the same "
             "encoding (class indices 0..C-1, not 1..C or one-hot), that the last layer has one output per class, "
             "and that the loss fits the task"),
    "chance": ("the model learns nothing from its inputs: check that labels still match their inputs (a shuffle or "
               "a sort applied to one and not the other), that the inputs vary and are normalised, and the learning "
               "rate; the other alerts name the likely cause"),
    "flat": ("accuracy does not move: check the learning rate and that the weights update (optimizer.step(), the "
             "optimizer's parameters); the other alerts name the likely cause"),
}


class AccuracyStuck(Rule):
    ids = (ID,)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken:
            return []
        chance = h.acc_chance
        if h.seen < h.patience or (h.acc_now is None and h.val_acc_now is None) or st.is_active("unshuffled_data"):
            return []  # on one-class batches (and a split of sorted data) accuracy says nothing more
        if st.facts.get("shuffled") is False:
            # A loader known not to shuffle: until unshuffled_data has the four sampled batches it needs (48 steps
            # at a sparse cadence), accuracy may be what one-class batches do. The verdict waits for it.
            batches = st.col("batch_top_frac")
            if batches is None or batches.end(h.now) < 4:
                return []
        causes = st.active.get(ID, set())
        zero_bar = min(ZERO_ACC, chance / 4) if chance else ZERO_ACC
        margin = chance_margin(chance, h.batch * h.window) * (1.5 if "chance" in causes else 1.0) if chance is not None else 0

        def verdict(acc: float | None) -> str | None:
            if acc is None:
                return None
            if acc <= zero_bar:
                return "zero"
            if chance is not None and acc <= chance + margin:
                # Skewed classes with predictions spread beyond the majority (a class-weighted loss): accuracy
                # at the majority's share is the price of minority recall, not a model that ignores its inputs.
                if h.handled_imbalance and acc >= handled_floor(chance):
                    return None
                return "chance"
            return None

        cause, which, acc = verdict(h.acc_now), "accuracy", h.acc_now
        # Flat: low (under halfway from chance to perfect) and not moving, with a loss that does not move either.
        # A pretrained model fine-tuned at a high accuracy is flat too, and fine.
        # With the class count unknown (an imported log) chance is taken as 0: only the lower half counts as low.
        floor = chance or 0.0
        low = h.acc_now is not None and h.acc_now <= floor + FLAT_ACC_LOW * (1 - floor)
        if cause is None and low and h.acc_start is not None and h.acc_now is not None \
                and abs(h.acc_now - h.acc_start) < FLAT_ACC_DELTA and h.not_learning:
            cause = "flat"
        if cause is None and verdict(h.val_acc_now) is not None:
            # Training accuracy can rise by memorising (labels that do not match the inputs); validation cannot.
            cause, which, acc = verdict(h.val_acc_now), "validation accuracy", h.val_acc_now
        out = [ended(ID, c) for c in ("zero", "chance", "flat") if c != cause]
        if cause is None or acc is None:
            return out
        k = st.num_classes
        train = f" (training accuracy {h.acc_now:.1%})" if which != "accuracy" and h.acc_now is not None else ""
        if cause == "zero":
            message = f"{which} is {acc:.1%} after {h.seen} steps{train}: predictions never match the targets"
        elif cause == "chance":
            balanced = k and chance is not None and chance < 1.5 / k
            what = f"guessing among {k} classes" if balanced else "always answering the majority class"
            message = (f"{which} is stuck at chance: {acc:.1%} after {h.seen} steps{train}, no better than {what} "
                       f"({chance:.1%})")
        else:
            message = f"accuracy has not moved in {h.seen} steps: {h.acc_start:.1%} at the start, {acc:.1%} now"
        evidence = {"acc_now": h.acc_now, "val_acc_now": h.val_acc_now, "acc_start": h.acc_start, "chance": chance,
                    "num_classes": k, "steps": h.seen, "loss_start": h.loss_start, "loss_now": h.loss_now,
                    "judged_on": which}
        out.append(Finding(ID, True, cause, "warning", message, evidence, FIXES[cause], score=1.0))
        return out


class SingleClassPrediction(Rule):
    ids = ("single_class_prediction",)
    FIX = ("look at the alerts beside this one (dead ReLUs, learning rate, labels, class imbalance); for imbalanced "
           "data weight the loss or resample; check the last layer has one output per class and the loss fits the task")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken or st.is_active("unshuffled_data"):
            return []
        # Untrained models often answer one class for their first batches: only a model that stays there
        # (accuracy still at chance after the patience) has collapsed.
        stuck = h.at_chance or (h.acc_now is None and h.seen >= h.patience and h.stuck)
        short = False
        if not stuck and st.ended is not None and h.seen < h.patience:
            # A run too short for the patience is judged at its end (issue 15: 75 steps that learned only the
            # prior): accuracy at the majority's share and predictions of one class say so, however short.
            stuck = short = self._short_run_at_prior(st, h)
        if not stuck:
            return [ended("single_class_prediction")] if h.seen >= h.patience else []
        shares = st.class_shares()
        majority = float(shares.max()) if shares is not None else (h.acc_chance or 0.0)
        # With accuracy already no better than the majority's share, a top class taking that share (or 95%)
        # of the answers is a collapse onto it.
        bar = max(SINGLE_CLASS_FRACTION, majority)
        if short:
            bar = max(majority, 0.5)  # small batches at the end of a short run: 15 of 16 is one class too
        direct = self._measured(st, h)
        # Predictions are sampled sparsely. An old look still describes a model whose loss has not moved since.
        # Recent: within the window, or within two sampling intervals (a sparse cadence samples every 16 or 64
        # steps; the verdict must not depend on it).
        fresh = h.window
        s = st.col("pred_top_frac")
        if s is not None:
            steps = s.last(h.now, 2)[0]
            if len(steps) == 2:
                fresh = max(fresh, 2 * int(steps[1] - steps[0]))
        if direct is not None and (direct[1] >= h.now - fresh or h.not_learning):
            share, newest, samples = direct
            if share < bar:
                return [ended("single_class_prediction")]
            predicted = int(np.argmax(st.pred_hist)) if st.pred_hist is not None and st.pred_hist.sum() > 0 else None
            which = f" (class {predicted})" if predicted is not None else ""
            acc = f"; accuracy {h.acc_now:.1%} is no better than {_guess(st, majority)}" if h.acc_now is not None else ""
            return [Finding("single_class_prediction", True, None, "warning",
                            f"the model predicts one class for nearly every sample: {share:.0%} of each batch or "
                            f"more goes to its top class{which}{acc}",
                            {"top_prediction_share": share, "predicted_class": predicted, "majority_share": majority,
                             "acc_now": h.acc_now, "measured_at": newest, "samples": samples},
                            self.FIX, score=share)]
        if majority >= SKEWED_MAJORITY and h.acc_now is not None:
            # With skewed classes, accuracy at the majority's share means answering the majority class.
            cls = int(np.argmax(shares)) if shares is not None else None
            return [Finding("single_class_prediction", True, None, "warning",
                            f"the model answers the majority class{f' ({cls})' if cls is not None else ''} for "
                            f"(nearly) every input: its accuracy ({h.acc_now:.1%}) is the majority's share "
                            f"({majority:.1%})",
                            {"acc_now": h.acc_now, "majority_share": majority, "majority_class": cls,
                             "loss_now": h.loss_now, "class_prior_loss": h.chance_loss},
                            self.FIX, score=1.0)]
        return []  # nothing recent to judge by: keep the verdict as it is

    @staticmethod
    def _short_run_at_prior(st: RunState, h: Health) -> bool:
        if h.seen < 2 * START_STEPS or h.acc_now is None or h.acc_chance is None or h.uses_inputs:
            return False
        return h.acc_now <= h.acc_chance + chance_margin(h.acc_chance, h.batch * h.window)

    @staticmethod
    def _measured(st: RunState, h: Health) -> tuple[float, int, int] | None:
        """(second smallest of the last top-prediction shares, step of the newest, how many), from 3 samples or more.
        The second smallest: at a sparse cadence the last five samples reach back to an untrained model's first
        batch, which must not outvote four later ones."""
        s = st.col("pred_top_frac")
        if s is None:
            return None
        steps, v = s.last(h.now, 5)
        ok = np.isfinite(v)
        if ok.sum() < 3:
            return None
        return float(np.sort(v[ok])[1]), int(steps[-1]), int(ok.sum())


def _guess(st: RunState, majority: float) -> str:
    k = st.num_classes
    if k and majority < 1.5 / k:
        return f"guessing among {k} classes ({majority:.1%})"
    return f"always answering the majority class ({majority:.1%})"
