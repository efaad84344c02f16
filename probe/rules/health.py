"""Is training in trouble? The gate every dynamic rule passes before it may speak.

Fixed thresholds on gradients or activations flag healthy models (UMLAUT and DeepDiagnosis flagged half or
more of the healthy models in their own evaluations). AUTOTRAINER only looks for gradient problems once
accuracy stops improving; accmon does the same with four scale-free signs, judged on smoothed curves:

- not learning: the loss has fallen by less than 10% of where it started, after the patience;
- worse than chance: the loss is above what a model that ignores its inputs would score (the entropy of the
  class distribution, ln C for C balanced classes);
- at chance: training accuracy, or validation accuracy (training accuracy can rise by memorising), is no
  better than always answering the majority class, beyond the noise of its measurement;
- diverging: the loss went NaN/Inf, or doubled from its best or from its first steps.

Verdicts have hysteresis, and a rising learning rate (warm-up) suspends "not learning".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import losses as L
from .series import median
from .state import RunState
from .thresholds import (
    BALANCED_MARGIN,
    CHANCE_ACC_MARGIN,
    CHANCE_LOSS_FACTOR,
    DIVERGE_FACTOR,
    DIVERGE_MIN_RISE,
    HANDLED_IMBALANCE_MARGIN,
    MIN_PROGRESS,
    PATIENCE_DEFAULT,
    PATIENCE_EPOCHS,
    PATIENCE_MAX,
    PATIENCE_MIN,
    SKEWED_MAJORITY,
    START_STEPS,
    WINDOW_DEFAULT,
    WINDOW_MAX,
    WINDOW_MIN,
)


@dataclass
class Health:
    """The state of training at one step, as the rules see it."""

    now: int
    seen: int  # training steps seen so far
    window: int  # smoothing window, in steps
    patience: int  # steps without progress before a run counts as stuck
    loss_start: float | None = None
    loss_now: float | None = None
    loss_best: float | None = None
    loss_nonfinite: bool = False
    # The recent window lies wholly after the first steps (sparse logging can make them overlap): only then
    # does comparing them say anything.
    loss_windows_apart: bool = False
    chance_loss: float | None = None
    acc_start: float | None = None
    acc_now: float | None = None
    acc_chance: float | None = None  # accuracy of always answering the majority class
    val_acc_now: float | None = None  # mean of the last two validation accuracies
    loss_early: float | None = None  # median of the first three losses: the level before any divergence
    loss_first: float | None = None  # the lowest of the first three: back below it, a diverged run has recovered
    warming_up: bool = False  # the learning rate is still rising
    # Skewed classes, and the model predicts its top class less often than the majority occurs (a class-weighted
    # loss): accuracy at the majority's share is then no sign of a model that ignores its inputs.
    handled_imbalance: bool = False
    # Balanced accuracy (mean per-class recall) of the recent sampled batches: a model that ignores its inputs
    # scores 1/K however skewed the classes; None when not measured.
    balanced_acc: float | None = None
    uses_inputs: bool = False  # balanced accuracy clearly above 1/K: the model tells classes apart
    not_learning: bool = False
    worse_than_chance: bool = False
    at_chance: bool = False
    val_at_chance: bool = False  # validation accuracy at chance (training accuracy may be memorising)
    diverging: bool = False
    batch: int = 32  # samples per step, for the noise of a mean accuracy
    reasons: list[str] = field(default_factory=list)
    phase_start: int = 0  # first step of the current phase of training (0: the run's first phase)
    phase_why: str | None = None
    # The smoothed training loss at an earlier step (from the evaluations so far), for comparisons over time.
    loss_near: Callable[[int], float | None] | None = None

    @property
    def in_trouble(self) -> bool:
        return self.not_learning or self.worse_than_chance or self.at_chance or self.val_at_chance or self.diverging

    @property
    def stuck(self) -> bool:
        """Not moving (as opposed to moving the wrong way)."""
        return self.not_learning or self.at_chance or self.val_at_chance

    def why(self) -> str:
        return "; ".join(self.reasons)

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {"training": self.why()}
        for key in ("loss_start", "loss_now", "chance_loss", "acc_now", "acc_chance"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.phase_start:
            out["phase_start"] = self.phase_start
            out["phase_why"] = self.phase_why or "a new phase"
        return out


class HealthTracker:
    """Computes Health at each evaluation; remembers the best loss and a coarse trace of the smoothed loss."""

    def __init__(self) -> None:
        self.loss_best: float | None = None
        # (step, smoothed loss) at each evaluation: the training loss at the time of any past validation.
        self.trace: deque[tuple[int, float]] = deque(maxlen=1024)
        # The verdicts of the previous evaluation: a verdict, once given, needs clear evidence to be withdrawn,
        # so that a curve hovering at a threshold does not raise and clear alerts in turn.
        self.was: dict[str, bool] = {}
        self._starts: dict[str, tuple[float, float, float, int]] = {}
        self._chance_key: tuple[int, float] | None = None
        self._chance_val: tuple[float | None, float | None] = (None, None)
        self._phase = 0

    def at(self, st: RunState, now: int) -> Health:
        epoch = st.epoch_steps
        if epoch:
            window = min(WINDOW_MAX, max(WINDOW_MIN, epoch // 2))
            patience = min(PATIENCE_MAX, max(PATIENCE_MIN, PATIENCE_EPOCHS * epoch))
        else:
            window, patience = WINDOW_DEFAULT, PATIENCE_DEFAULT
        phase, why = st.phase_at(now)
        if phase != self._phase:
            # A new phase (a new optimizer, new data): where the loss started and its best start again.
            self._phase = phase
            self.loss_best = None
            self._starts.clear()
            self.was = {}
        seen = st.seen(now) if not phase else max(0, now - phase + 1)
        h = Health(now=now, seen=seen, window=window, patience=patience, loss_near=self.loss_near)
        h.phase_start, h.phase_why = phase, why
        batch = st.facts.get("batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
            h.batch = batch
        self._loss(st, h)
        self._accuracy(st, h)
        self._warmup(st, h)
        self._imbalance(st, h)
        self._verdicts(h)
        self.was = {"not_learning": h.not_learning, "worse_than_chance": h.worse_than_chance, "at_chance": h.at_chance,
                    "val_at_chance": h.val_at_chance}
        return h

    def _loss(self, st: RunState, h: Health) -> None:
        series = st.col("loss")
        if series is None:
            return
        first_step, recent = series.window(h.now, h.window)
        if not recent:
            return
        finite = recent if all(map(math.isfinite, recent)) else [v for v in recent if math.isfinite(v)]
        h.loss_nonfinite = len(finite) < len(recent)
        start = self._start(st, "loss", h.now)
        if start is not None:
            h.loss_start, h.loss_early, h.loss_first, last_start_step = start
            h.loss_windows_apart = first_step > last_start_step
        if len(finite) >= min(h.window, 4):
            h.loss_now = median(finite)
            if h.seen >= h.window:
                self.loss_best = h.loss_now if self.loss_best is None else min(self.loss_best, h.loss_now)
                if not self.trace or self.trace[-1][0] < h.now:
                    self.trace.append((h.now, h.loss_now))
        h.loss_best = self.loss_best
        h.chance_loss = self._chance(st)[0]

    def _start(self, st: RunState, name: str, now: int) -> tuple[float, float, float, int] | None:
        """(median of the first values, median of the first three, lowest of the first three, step of the last
        of them), for the first values at or before `now`; cached once all of them are in."""
        cached = self._starts.get(name)
        if cached is not None:
            return cached
        if self._phase:
            series = st.col(name)
            if series is None:
                return None
            steps, vals = series.upto(now)
            keep = (steps >= self._phase) & np.isfinite(vals)
            first = list(zip(steps[keep][:START_STEPS].tolist(), vals[keep][:START_STEPS].tolist()))
        else:
            first = [(s, v) for s, v in st.first[name] if s <= now]
        if not first:
            return None
        firsts = [v for _, v in first]
        out = (median(firsts), median(firsts[:3]), min(firsts[:3]), first[-1][0])
        if len(first) == START_STEPS:
            self._starts[name] = out
        return out

    def _chance(self, st: RunState) -> tuple[float | None, float | None]:
        """(chance-level loss, chance accuracy), recomputed only when facts or class counts change."""
        key = (st.facts_version, st.hist_samples())
        if self._chance_key != key:
            self._chance_key, self._chance_val = key, (chance_loss(st), chance_accuracy(st))
        return self._chance_val

    def _accuracy(self, st: RunState, h: Health) -> None:
        series = st.col("acc")
        if series is None:
            return
        recent = series.window(h.now, h.window)[1]
        if not all(map(math.isfinite, recent)):
            recent = [v for v in recent if math.isfinite(v)]
        if len(recent) >= min(h.window, 4):
            h.acc_now = sum(recent) / len(recent)
        start = self._start(st, "acc", h.now)
        if start is not None:
            first = [v for s, v in st.first["acc"] if s <= h.now]
            h.acc_start = start[0] if self._phase or not first else sum(first) / len(first)
        h.acc_chance = self._chance(st)[1]
        val = st.col("val_acc")
        if val is not None:
            v = [x for x in val.window(h.now, 2)[1] if math.isfinite(x)]
            if len(v) == 2:
                h.val_acc_now = (v[0] + v[1]) / 2

    def _warmup(self, st: RunState, h: Health) -> None:
        lr = st.col("lr")
        if lr is None:
            return
        first, last = lr.ends(h.now, h.window)
        if first is not None and last is not None and first > 0 and last > first * 1.05:
            h.warming_up = True

    def _imbalance(self, st: RunState, h: Health) -> None:
        chance = h.acc_chance
        k = st.num_classes or (2 if st.task == "binary" else None)
        bal = st.col("batch_bal_acc")
        if bal is not None and k:
            # The last sampled batches that hold two classes or more (over one class, recall is accuracy): at
            # least 5 of the last 15 samples.
            steps, values = bal.last(h.now, 15)
            held = st.col("batch_classes")
            several: set[int] | None = None
            if held is not None:
                hs, hv = held.last(h.now, 64)
                several = {int(s) for s, v in zip(hs.tolist(), hv.tolist()) if v >= 2}
            vals = [v for s, v in zip(steps.tolist(), values.tolist())
                    if math.isfinite(v) and (several is None or int(s) in several)]
            if len(vals) >= 5:
                h.balanced_acc = sum(vals) / len(vals)
                h.uses_inputs = h.balanced_acc >= 1 / k + BALANCED_MARGIN * (1 - 1 / k)
        if chance is None or chance < SKEWED_MAJORITY:
            return
        if h.uses_inputs:
            # Balanced accuracy shows the classes told apart: the imbalance is handled, whatever share the top
            # predicted class takes in the last batches (a noisy reading at every step: healthy_weighted_imbalance
            # flipped in and out of it and raised accuracy_stuck at every 1 and 4, not at 8 or 16).
            h.handled_imbalance = True
            return
        top = st.recent("pred_top_frac", h.now)
        # Sampled sparsely (every 64 steps late in a run): the last looks, however old, but not a fresh model's.
        if top is None or top[2] < 3 or top[1] < 2 * h.window:
            return
        se = math.sqrt(chance * (1 - chance) / max(h.batch * top[2], 1))
        h.handled_imbalance = top[0] < chance - max(HANDLED_IMBALANCE_MARGIN, 2 * se)

    def _verdicts(self, h: Health) -> None:
        start, now = h.loss_start, h.loss_now
        # Most telling first: rules quote the first reason.
        if h.loss_nonfinite:
            h.diverging = True
            h.reasons.append("the loss is NaN/Inf")
        elif now is not None:
            # Against the best smoothed loss so far, or against the first steps for a loss that explodes at once.
            # The first steps' lowest loss too: a loss that explodes at its second step has a median of the first
            # three that is already exploded.
            refs = [r for r in (h.loss_best if h.seen >= 2 * h.window else None, h.loss_early, h.loss_first)
                    if r is not None and r > 0]
            # An absolute scale too: the rise must be a real share of where the loss started (or of the chance
            # loss), not a near-zero loss that doubles.
            scale = h.chance_loss or h.loss_first or h.loss_early or 0.0
            if refs and h.seen >= START_STEPS and now > DIVERGE_FACTOR * min(refs) \
                    and now - min(refs) >= DIVERGE_MIN_RISE * scale:
                h.diverging = True
                h.reasons.append(f"the loss rose from {min(refs):.4g} to {now:.4g}")
        # Thresholds to leave a verdict sit beyond those to enter it (hysteresis).
        ease = 1.5
        if h.seen >= h.patience and start is not None and now is not None and not h.warming_up \
                and h.loss_windows_apart:
            progress = MIN_PROGRESS * (ease if self.was.get("not_learning") else 1.0)
            if start - now < progress * abs(start):
                h.not_learning = True
                h.reasons.append(f"the loss has not fallen in {h.seen} steps ({start:.4g} at the start, {now:.4g} now)")
        if h.chance_loss is not None and now is not None and h.seen >= max(2 * h.window, 2 * START_STEPS):
            factor = 1.0 if self.was.get("worse_than_chance") else CHANCE_LOSS_FACTOR
            if now > factor * h.chance_loss:
                h.worse_than_chance = True
                h.reasons.append(f"the loss ({now:.4g}) is above that of a model that ignores its inputs ({h.chance_loss:.4g})")
        if h.acc_now is not None and h.acc_chance is not None and h.seen >= h.patience:
            margin = chance_margin(h.acc_chance, h.batch * h.window) * (ease if self.was.get("at_chance") else 1.0)
            handled = (h.handled_imbalance and h.acc_now >= handled_floor(h.acc_chance)) \
                or (h.uses_inputs and h.acc_chance >= SKEWED_MAJORITY)
            if h.acc_now <= h.acc_chance + margin and not handled:
                h.at_chance = True
                h.reasons.append(f"accuracy ({h.acc_now:.3f}) is at chance ({h.acc_chance:.3f}) after {h.seen} steps")
        if h.val_acc_now is not None and h.acc_chance is not None and h.seen >= h.patience:
            margin = chance_margin(h.acc_chance, h.batch * 4) * (ease if self.was.get("val_at_chance") else 1.0)
            handled = (h.handled_imbalance and h.val_acc_now >= handled_floor(h.acc_chance)) \
                or (h.uses_inputs and h.acc_chance >= SKEWED_MAJORITY and h.val_acc_now >= h.acc_chance)
            if h.val_acc_now <= h.acc_chance + margin and not handled:
                h.val_at_chance = True
                h.reasons.append(f"validation accuracy ({h.val_acc_now:.3f}) is at chance ({h.acc_chance:.3f})")

    def loss_near(self, step: int) -> float | None:
        """The smoothed training loss at the evaluation nearest before `step`."""
        best = None
        for s, v in self.trace:
            if s > step:
                break
            best = v
        return best if best is not None else (self.trace[0][1] if self.trace else None)


def handled_floor(chance: float) -> float:
    """The lowest accuracy of a model on skewed classes that trades majority accuracy for minority recall (a
    class-weighted loss): it may lose as much as the minority's share; a model that guesses loses more."""
    return chance - (1 - chance)


def chance_margin(chance: float, samples: int) -> float:
    """How far above chance accuracy must be to count as learning: 10% of the way to perfect, or twice the
    standard error of an accuracy measured on `samples` predictions at chance, whichever is larger (with a
    97% majority class, 10% of the way is 0.3 points, below the noise of a mean over tens of batches)."""
    se = math.sqrt(max(chance * (1 - chance), 0.0) / max(samples, 1))
    return max(CHANCE_ACC_MARGIN * (1 - chance), 2 * se)


def chance_loss(st: RunState) -> float | None:
    """Cross-entropy of a model that ignores its inputs and predicts the class frequencies: their entropy."""
    fam = L.family(st.loss)
    if fam not in (L.LOGITS_CE, L.PROB_CE, L.NLL, L.BCE_PROB, L.BCE_LOGITS) or st.task not in ("binary", "multiclass"):
        return None
    if st.task == "multiclass" and fam in (L.BCE_PROB, L.BCE_LOGITS):
        return None  # one-hot rows under BCE: a different scale (the label_issue rule speaks to it)
    shares = st.class_shares()
    k = st.num_classes
    if shares is not None and enough_counts(st):
        return _prior_loss(st, shares)
    if k:
        return math.log(k) if st.task == "multiclass" else math.log(2)
    return None


def enough_counts(st: RunState) -> bool:
    """Class counts from 100 samples, or from four sampled batches (a sparse cadence with small batches samples
    few: a short run at every 16 steps sees five batches of 16, whose shares already say 90/10)."""
    batch = st.facts.get("batch_size")
    need = 100
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
        need = min(need, 4 * batch)
    return st.hist_samples() >= need


def _prior_loss(st: RunState, shares: np.ndarray) -> float:
    """The loss of the best constant prediction, with the loss's own class weights (issue 15): a weighted
    cross-entropy's mean divides by the weights of the batch's targets, so the best constant answer is the
    reweighted prior r_c ∝ p_c w_c and scores its entropy; BCE's pos_weight scales the positives' term; label
    smoothing ε moves the targets to (1-ε)p + ε/K."""
    loss = st.loss
    weights = loss.get("class_weights")
    pos_weight = loss.get("pos_weight")
    smoothing = loss.get("label_smoothing")
    p = shares.astype(np.float64)
    if isinstance(pos_weight, list) and len(pos_weight) == 1 and len(p) == 2 and isinstance(pos_weight[0], (int, float)):
        pw = float(pos_weight[0])
        p0, p1 = float(p[0]), float(p[1])
        q = p1 * pw / (p1 * pw + p0) if p1 * pw + p0 > 0 else 0.5
        q = min(max(q, 1e-12), 1 - 1e-12)
        return float(-(p1 * pw * math.log(q) + p0 * math.log(1 - q)))
    if isinstance(weights, list) and len(weights) == len(p) and all(isinstance(w, (int, float)) for w in weights):
        r = p * np.asarray(weights, dtype=np.float64)
        if r.sum() > 0:
            p = r / r.sum()
    if isinstance(smoothing, (int, float)) and 0 < smoothing < 1 and len(p) >= 2:
        p = (1 - smoothing) * p + smoothing / len(p)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def chance_accuracy(st: RunState) -> float | None:
    """Accuracy of always answering the majority class (1/C when the class counts are unknown)."""
    shares = st.class_shares()
    if shares is not None and enough_counts(st):
        return float(shares.max())
    k = st.num_classes
    if st.task == "multiclass" and k:
        return 1.0 / k
    if st.task == "binary":
        return 0.5
    return None
