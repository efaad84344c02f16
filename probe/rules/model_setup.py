"""loss_task_mismatch, double_softmax and output_activation_mismatch: how model, loss and targets fit together.

Static rules: they decide from the facts of the first batch (the loss, the model's output activation, the
targets' dtype, shape and range), so they speak within the first steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import losses as L
from .base import Finding, Rule, ended, num
from .health import Health
from .state import RunState
from .thresholds import CLASS_ID_MAX_VALUES, CLASS_ID_MIN_VALUES


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def output_activation(st: RunState) -> str | None:
    act = st.model.get("output_activation")
    return act if isinstance(act, str) and act != "unknown" else None


class LossTaskMismatch(Rule):
    ids = ("loss_task_mismatch",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        fam, kind = L.family(st.loss), L.kind(st.loss)
        t = st.facts.get("targets")
        if fam is None or not isinstance(t, dict):
            return []
        tmin, tmax, distinct = _num(t.get("min")), _num(t.get("max")), t.get("distinct")
        integral, one_hot = t.get("integral") is True, t.get("one_hot") is True
        if fam == L.REGRESSION:
            class_ids = (integral and isinstance(distinct, int) and CLASS_ID_MIN_VALUES <= distinct <= CLASS_ID_MAX_VALUES
                         and tmin == 0 and tmax == distinct - 1)
            binary = integral and tmin is not None and tmax is not None and tmin >= 0 and tmax <= 1
            if class_ids:
                return [Finding("loss_task_mismatch", True, "regression_on_classes", "warning",
                                f"{kind}, a regression loss, on targets that look like class ids (integers "
                                f"0..{int(tmax or 0)}): it treats classes as numbers, so class 2 lies between 1 and 3 "
                                "and a prediction of 1.5 counts as half right",
                                {"loss": kind, "target_min": tmin, "target_max": tmax, "distinct_targets": distinct,
                                 "target_dtype": t.get("dtype")},
                                "for classes use nn.CrossEntropyLoss with one output per class and integer targets; "
                                "keep the regression loss only if the targets are genuine quantities")]
            if one_hot or binary or st.task in ("binary", "multiclass"):
                # Squared error on 0/1 or one-hot targets is the Brier score: it trains, slower than cross-entropy.
                # Worth a warning only when training is in trouble and nothing more specific explains it.
                loud = h.in_trouble and not st.is_active("label_issue")
                return [Finding("loss_task_mismatch", True, "regression_on_classes", "warning" if loud else "info",
                                f"{kind}, a regression loss, on class labels ({'one-hot rows' if one_hot else '0/1 targets'}): "
                                "it trains, but more slowly and less surely than cross-entropy"
                                + (f"; and {h.reasons[0]}" if loud and h.reasons else ""),
                                {"loss": kind, "one_hot": one_hot, "target_min": tmin, "target_max": tmax,
                                 **(h.evidence() if loud else {})},
                                "use nn.CrossEntropyLoss (one output per class, class indices as targets) or "
                                "nn.BCEWithLogitsLoss for one binary output, on raw scores (no final sigmoid/softmax)")]
            return [ended("loss_task_mismatch", "regression_on_classes")]
        if fam in (L.LOGITS_CE, L.PROB_CE, L.NLL, L.BCE_PROB, L.BCE_LOGITS):
            if not integral and tmin is not None and tmax is not None and (tmin < 0 or tmax > 1):
                return [Finding("loss_task_mismatch", True, "classification_on_continuous", "critical",
                                f"{kind}, a classification loss, on continuous targets (from {num(tmin, 3)} to "
                                f"{num(tmax, 3)}): they are neither class ids nor probabilities",
                                {"loss": kind, "target_min": tmin, "target_max": tmax, "target_dtype": t.get("dtype")},
                                "for real-valued targets use a regression loss (nn.MSELoss, nn.L1Loss, nn.HuberLoss) "
                                "with a linear output; for classes, turn the targets into class indices")]
            return [ended("loss_task_mismatch", "classification_on_continuous")]
        return []


class DoubleSoftmax(Rule):
    ids = ("double_softmax",)
    static = True

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if L.family(st.loss) != L.LOGITS_CE:
            return []
        act = output_activation(st)
        sums_one = st.fact("predictions", "rows_sum_to_one") is True
        if act is None and st.fact("predictions", "rows_sum_to_one") is None:
            return []
        if act != "softmax" and not sums_one:
            return [ended("double_softmax")]
        kind = L.kind(st.loss)
        lo, hi = _num(st.fact("predictions", "min")), _num(st.fact("predictions", "max"))
        where = "the model ends in a softmax" if act == "softmax" else "the model's outputs already sum to 1 per row"
        rng = f" (outputs between {num(lo, 3)} and {num(hi, 3)})" if lo is not None and hi is not None else ""
        return [Finding("double_softmax", True, None, "warning",
                        f"{where}{rng} and {kind} applies log-softmax again: the loss sees squashed scores, its "
                        "gradients shrink and learning stalls",
                        {"output_activation": act or "softmax (from the values)", "loss": kind,
                         "prediction_min": lo, "prediction_max": hi},
                        f"remove the final softmax (nn.Softmax, or F.softmax in forward()): {kind} takes raw scores "
                        "and applies log-softmax itself; apply softmax only to read probabilities at inference")]


ID = "output_activation_mismatch"


class OutputActivationMismatch(Rule):
    ids = (ID,)
    static = True

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        act, fam, kind = output_activation(st), L.family(st.loss), L.kind(st.loss)
        if act is None or fam is None:
            return []
        t_fact = st.facts.get("targets")
        t: dict = t_fact if isinstance(t_fact, dict) else {}
        tmin, tmax = _num(t.get("min")), _num(t.get("max"))
        found: dict[str, Finding] = {}

        if act in ("relu", "relu6", "softplus") and fam in (L.LOGITS_CE, L.BCE_LOGITS):
            found["relu_logits"] = Finding(
                ID, True, "relu_logits", "warning",
                f"the model ends in {act}, which clips its scores at 0, and {kind} needs raw scores that can go "
                "negative: classes cannot be pushed below each other",
                {"output_activation": act, "loss": kind},
                "remove the activation after the last layer: the final nn.Linear's output goes to the loss as it is")
        if act in ("sigmoid", "softmax") and fam == L.BCE_LOGITS:
            found["sigmoid_into_logits"] = Finding(
                ID, True, "sigmoid_into_logits", "warning",
                f"the model ends in {act} and {kind} applies a sigmoid again: outputs are squeezed into "
                "(0.5, 0.73), the loss can hardly fall and gradients are small",
                {"output_activation": act, "loss": kind},
                f"remove the final {act}: {kind} takes raw scores (or keep the {act} and use nn.BCELoss)")
        if fam in (L.BCE_PROB, L.PROB_CE):
            want = "sigmoid" if fam == L.BCE_PROB else "softmax"
            if act not in (want, "softmax", "sigmoid"):
                found["scores_into_probability_loss"] = Finding(
                    ID, True, "scores_into_probability_loss", "warning",
                    f"{kind} takes probabilities but the model's output activation is '{act}': scores outside "
                    "[0, 1] are not probabilities",
                    {"output_activation": act, "loss": kind},
                    f"use the loss on raw scores instead ({'nn.BCEWithLogitsLoss' if fam == L.BCE_PROB else 'from_logits=True'}), "
                    f"or end the model in {want}")
        if fam == L.NLL and act != "log_softmax" and st.fact("predictions", "logsumexp_zero") is not True:
            probs = act == "softmax"
            found["nll_input"] = Finding(
                ID, True, "nll_input", "warning" if probs else "critical",
                f"{kind} takes log-probabilities, but the model's outputs are "
                + ("probabilities (softmax): the loss is -p, bounded and flat" if probs else
                   f"raw scores ('{act}'): the loss is minus the score and falls without bound"),
                {"output_activation": act, "loss": kind},
                "end the model in nn.LogSoftmax(dim=1), or feed raw scores to nn.CrossEntropyLoss instead")
        if act == "softmax" and st.task == "multilabel" and t.get("one_hot") is not True:
            found["softmax_multilabel"] = Finding(
                ID, True, "softmax_multilabel", "warning",
                "several labels per sample, but a softmax output makes labels compete: raising one lowers the others",
                {"output_activation": act, "task": "multilabel", "loss": kind},
                "use one independent sigmoid per label: raw scores into nn.BCEWithLogitsLoss")
        if fam == L.REGRESSION and tmin is not None and tmax is not None:
            ranges = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, None),
                      "relu6": (0.0, 6.0), "softplus": (0.0, None)}
            if act in ranges:
                lo, hi = ranges[act]
                if tmin < lo or (hi is not None and tmax > hi):
                    span = f"[{num(lo)}, {num(hi) if hi is not None else 'inf'})"
                    found["bounded_output"] = Finding(
                        ID, True, "bounded_output", "warning",
                        f"the model ends in {act}, whose outputs stay in {span}, but the targets run from "
                        f"{num(tmin, 3)} to {num(tmax, 3)}: part of the range can never be predicted",
                        {"output_activation": act, "target_min": tmin, "target_max": tmax, "loss": kind},
                        "remove the output activation (a linear output), or scale the targets into its range")
        causes = ("relu_logits", "sigmoid_into_logits", "scores_into_probability_loss", "nll_input",
                  "softmax_multilabel", "bounded_output")
        return [found.get(c) or ended(ID, c) for c in causes]
