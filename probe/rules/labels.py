"""label_issue, class_imbalance and unshuffled_data: what the targets say, and in what order they come."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import losses as L
from .base import Finding, Rule, ended, num
from .health import Health
from .series import median
from .state import RunState
from .thresholds import (
    IMBALANCE_MAJORITY_WARN,
    IMBALANCE_MIN_PER_CLASS,
    IMBALANCE_RATIO,
    UNSHUFFLED_DISTINCT_FRACTION,
    UNSHUFFLED_EXCESS,
    UNSHUFFLED_MIN_SAMPLES,
    UNSHUFFLED_SIGMAS,
    UNSHUFFLED_SLACK,
)

ID = "label_issue"


def _shape(x: Any) -> tuple[int, ...] | None:
    if isinstance(x, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in x):
        return tuple(x)
    return None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class LabelIssue(Rule):
    ids = (ID,)
    static = True

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        targets, preds = st.facts.get("targets"), st.facts.get("predictions")
        if not isinstance(targets, dict) or not st.loss:
            return []
        kind = L.kind(st.loss)
        tshape, pshape = _shape(targets.get("shape")), _shape(preds.get("shape") if isinstance(preds, dict) else None)
        dtype = str(targets.get("dtype", ""))
        is_float = dtype.startswith(("float", "bfloat", "half", "double"))
        tmin, tmax = _num(targets.get("min")), _num(targets.get("max"))
        integral = targets.get("integral") is True
        out = []

        # Broadcasting: (N, 1) predictions against (N,) targets become an (N, N) comparison.
        broadcast = None
        if kind in L.ELEMENTWISE and tshape is not None and pshape is not None and tshape != pshape:
            try:
                both = tuple(np.broadcast_shapes(tshape, pshape))
            except ValueError:
                both = None
            if both is not None and both != pshape:
                broadcast = both
        if broadcast is not None:
            out.append(Finding(ID, True, "broadcast", "critical",
                               f"targets of shape {tshape} against predictions of shape {pshape}: {kind} broadcasts "
                               f"them to {broadcast} and compares every prediction with every target",
                               {"target_shape": list(tshape or ()), "prediction_shape": list(pshape or ()),
                                "broadcast_shape": list(broadcast or ()), "loss": kind},
                               "give the targets the predictions' shape: target.view_as(output) (or "
                               "output.squeeze(1) against (N,) targets)"))
        elif tshape is not None and pshape is not None:
            out.append(ended(ID, "broadcast"))

        k = st.num_classes
        as_probabilities = tshape is not None and tshape == pshape
        if kind in L.INDEX_LOSSES and not as_probabilities and tmin is not None and tmax is not None:
            ignore = st.loss.get("ignore_index")
            low_bad = tmin < 0 and tmin != ignore
            if (k is not None and tmax >= k) or low_bad:
                out.append(Finding(ID, True, "out_of_range", "critical",
                                   f"class ids run from {num(tmin)} to {num(tmax)} but the model has {k} outputs: "
                                   f"{kind} needs ids 0..{k - 1 if k else 'C-1'}",
                                   {"target_min": tmin, "target_max": tmax, "num_classes": k, "loss": kind},
                                   "make the targets 0-based class indices below the number of outputs (y - 1 for "
                                   "labels that start at 1), or give the last layer one output per class"))
            else:
                out.append(ended(ID, "out_of_range"))
            if is_float and integral:
                out.append(Finding(ID, True, "float_class_ids", "warning",
                                   f"class ids come as {dtype} values; {kind} takes integer class indices (int64) "
                                   "or class probabilities of the predictions' shape",
                                   {"target_dtype": dtype, "target_shape": list(tshape or ()), "loss": kind},
                                   "convert the targets with y.long()"))
            else:
                out.append(ended(ID, "float_class_ids"))
        elif L.family(st.loss) in (L.BCE_PROB, L.BCE_LOGITS) and tmin is not None and tmax is not None:
            if integral and (tmin < 0 or tmax > 1):
                out.append(Finding(ID, True, "out_of_range", "critical",
                                   f"binary targets must be 0 or 1, but they run from {num(tmin)} to {num(tmax)}: "
                                   f"{kind} reads class ids as probabilities",
                                   {"target_min": tmin, "target_max": tmax, "loss": kind},
                                   "for several classes use nn.CrossEntropyLoss with class indices and one output "
                                   "per class; for binary labels map them to 0/1"))
            else:
                out.append(ended(ID, "out_of_range"))
            if targets.get("one_hot") is True and st.task == "multilabel":
                out.append(Finding(ID, True, "one_hot", "warning",
                                   f"targets are one-hot rows (one class per sample) trained with {kind} as if the "
                                   "classes were independent labels",
                                   {"target_shape": list(tshape or ()), "loss": kind, "one_hot": True},
                                   "for one class per sample use nn.CrossEntropyLoss on raw scores with class "
                                   "indices (targets.argmax(1)); keep BCE for multi-label data"))
            else:
                out.append(ended(ID, "one_hot"))
        return out


class ClassImbalance(Rule):
    ids = ("class_imbalance",)
    FIX = ("weight the loss by inverse class frequency (nn.CrossEntropyLoss(weight=...), BCEWithLogitsLoss(pos_weight=...)) "
           "or oversample rare classes (WeightedRandomSampler); judge the model by balanced accuracy, per-class "
           "recall or F1, not accuracy")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.is_active("unshuffled_data"):
            return [ended("class_imbalance")]  # counts from sorted batches describe the first classes, not the data
        counts = st.target_hist
        shares = st.class_shares()
        if counts is None or shares is None or not 2 <= len(counts) <= 100:
            return []
        if counts.sum() < IMBALANCE_MIN_PER_CLASS * len(counts):
            return []
        big, small = int(counts.argmax()), int(counts.argmin())
        ratio = float(counts[big] / max(counts[small], 0.5))
        was = st.is_active("class_imbalance")
        # Beyond the noise of the counts (two Poisson standard errors on the rarest class): 90/10 data sampled
        # sparsely reads 91/9 at one cadence and 89/11 at another, on either side of 10x.
        ratio_low = float(counts[big] / max(counts[small] + 2 * np.sqrt(counts[small]), 0.5))
        if (ratio if was else ratio_low) < IMBALANCE_RATIO / (1.5 if was else 1.0):
            return [ended("class_imbalance")]
        majority = float(shares[big])
        # Imbalance is a property of the data, handled or not (class weights, resampling): advice until the
        # model shows it is not handled, by collapsing onto the majority.
        collapsed = st.is_active("single_class_prediction") or h.at_chance
        severity = "warning" if collapsed else "info"
        order = np.argsort(-shares)
        shown = {str(int(i)): num(shares[i], 3) for i in list(order[:5]) + list(order[-3:])}
        rare = "never appears" if counts[small] == 0 else f"{shares[small]:.1%}"
        message = (f"classes are imbalanced: class {big} is {majority:.0%} of the targets, "
                   f"{'far more than' if counts[small] == 0 else f'{ratio:.0f}x'} the rarest (class {small}: {rare})")
        if collapsed:
            message += f"; the model does no better than always answering class {big} ({majority:.0%} accuracy)"
        elif majority >= IMBALANCE_MAJORITY_WARN:
            message += f"; always answering class {big} scores {majority:.0%} accuracy: judge the model by other measures"
        return [Finding("class_imbalance", True, None, severity, message,
                        {"class_shares": shown, "ratio": ratio, "samples": float(counts.sum()),
                         "majority_class": big, "majority_share": majority, "threshold": IMBALANCE_RATIO},
                        self.FIX, score=ratio)]


def _targets_per_batch(st: RunState) -> int | None:
    """Samples per batch when each has one class id (targets of shape (N,)), else None."""
    shape = st.fact("targets", "shape")
    if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 8:
        batch = st.facts.get("batch_size")
        return batch if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 8 else shape[0]
    return None


def _few_classes(st: RunState, h: Health, shares: Any, per_batch: int | None) -> tuple[float, float] | None:
    """(typical distinct classes per batch, expected in a random batch) when batches hold far fewer, else None."""
    col = st.col("batch_classes")
    if col is None or shares is None or not per_batch:
        return None
    v = [x for x in col.window(h.now, 16)[1] if math.isfinite(x)]
    if len(v) < UNSHUFFLED_MIN_SAMPLES:
        return None
    expected = float(np.sum(1.0 - (1.0 - np.asarray(shares, dtype=float)) ** per_batch))
    typical = median(v)
    if expected >= 3 and typical <= UNSHUFFLED_DISTINCT_FRACTION * expected:
        return typical, expected
    return None


class UnshuffledData(Rule):
    ids = ("unshuffled_data",)
    FIX = ("shuffle the training data: DataLoader(train_set, shuffle=True) (or a RandomSampler / "
           "DistributedSampler(shuffle=True)); batches of one class pull the model toward that class in turn")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.facts.get("shuffled") is True or st.task not in ("binary", "multiclass"):
            return [ended("unshuffled_data")]
        top = st.col("batch_top_frac")
        if top is None:
            return []
        v = [x for x in top.window(h.now, 16)[1] if math.isfinite(x)]
        if len(v) < UNSHUFFLED_MIN_SAMPLES:
            return []
        batch = st.facts.get("batch_size")
        if isinstance(batch, int) and batch < 8:
            return []
        shares = st.class_shares()
        k = st.num_classes
        majority = float(shares.max()) if shares is not None else (1.0 / k if k else 0.5)
        typical = median(v)
        was = st.is_active("unshuffled_data")
        bar = majority + UNSHUFFLED_EXCESS * (1 - majority)
        # Many classes: halfway to 1.0 is far above what a shuffled batch can show (batches holding 2 of 10
        # classes are 50% one class); compare with the spread of a class's share in a random batch instead.
        per_batch = _targets_per_batch(st)
        if per_batch and k and 2 <= k <= 100:
            se = math.sqrt(majority * (1 - majority) / per_batch)
            bar = min(bar, majority + UNSHUFFLED_SIGMAS * se + UNSHUFFLED_SLACK)
        few = _few_classes(st, h, shares, per_batch)
        if typical < bar - (0.1 * (1 - majority) if was else 0.0) and few is None:
            return [ended("unshuffled_data")]
        evidence: dict[str, object] = {"typical_top_class_share": typical, "data_majority_share": majority,
                                       "batches_sampled": len(v), "shuffled": st.facts.get("shuffled")}
        if few is not None:
            evidence.update(typical_classes_per_batch=few[0], expected_classes_per_batch=num(few[1], 3))
        runs = ""
        cls = st.col("batch_top_class")
        if cls is not None:
            s_, c_ = cls.last(h.now, 16)
            seq = [int(c) for c in c_ if np.isfinite(c)]
            evidence["top_class_by_batch"] = seq
            runs = f"; top class by batch from step {int(s_[0])}: {' '.join(map(str, seq[:12]))}" if seq else ""
        return [Finding("unshuffled_data", True, None, "warning",
                        f"batches are not shuffled: a typical batch is {typical:.0%} one class (the data overall: "
                        f"{majority:.0%})"
                        + (f" and holds {few[0]:g} classes where a shuffled one would hold {few[1]:.1f}" if few else "")
                        + runs,
                        evidence, self.FIX, score=typical)]
