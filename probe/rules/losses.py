"""What a loss expects: probabilities, log-probabilities, logits, class indices or real numbers.

The probe names the loss by its class (`CrossEntropyLoss`, ...); other front ends may give Keras names
(`sparse_categorical_crossentropy`, `from_logits`). Rules ask about families, not names.
"""

from __future__ import annotations

from typing import Any

LOGITS_CE = "ce"  # softmax cross-entropy on raw scores (nn.CrossEntropyLoss, Keras from_logits=True)
PROB_CE = "ce_prob"  # categorical cross-entropy on probabilities (Keras from_logits=False)
NLL = "nll"  # negative log-likelihood on log-probabilities (nn.NLLLoss)
BCE_PROB = "bce_prob"  # binary cross-entropy on probabilities (nn.BCELoss)
BCE_LOGITS = "bce_logits"  # binary cross-entropy on raw scores (nn.BCEWithLogitsLoss)
REGRESSION = "regression"  # MSE, L1, Huber...
OTHER = "other"

_TORCH = {
    "CrossEntropyLoss": LOGITS_CE,
    "NLLLoss": NLL,
    "NLLLoss2d": NLL,
    "BCELoss": BCE_PROB,
    "BCEWithLogitsLoss": BCE_LOGITS,
    "MultiLabelSoftMarginLoss": BCE_LOGITS,
    "MSELoss": REGRESSION,
    "L1Loss": REGRESSION,
    "SmoothL1Loss": REGRESSION,
    "HuberLoss": REGRESSION,
}
_KERAS_REGRESSION = {"meansquarederror", "mse", "meanabsoluteerror", "mae", "huber", "logcosh",
                     "meansquaredlogarithmicerror", "msle"}

# Losses applied element by element: predictions and targets must have one shape, or broadcasting pairs every
# prediction with every target.
ELEMENTWISE = frozenset({"MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss",
                         "SoftMarginLoss", "PoissonNLLLoss", "KLDivLoss"})
# Losses that take one class index per sample (or class probabilities of the predictions' shape).
INDEX_LOSSES = frozenset({"CrossEntropyLoss", "NLLLoss", "NLLLoss2d", "MultiMarginLoss"})


def family(loss: Any) -> str | None:
    """The family of the `loss` fact, or None when nothing is known."""
    if not isinstance(loss, dict) or not isinstance(loss.get("kind"), str):
        return None
    kind = loss["kind"]
    if kind in _TORCH:
        return _TORCH[kind]
    key = kind.lower().replace("_", "")
    logits = loss.get("from_logits") is True
    if "categoricalcrossentropy" in key:
        return LOGITS_CE if logits else PROB_CE
    if "binarycrossentropy" in key or "binaryfocalcrossentropy" in key:
        return BCE_LOGITS if logits else BCE_PROB
    if key in _KERAS_REGRESSION:
        return REGRESSION
    return OTHER


def kind(loss: Any) -> str:
    k = loss.get("kind") if isinstance(loss, dict) else None
    return k if isinstance(k, str) else "?"  # a malformed fact must not reach the set lookups of the rules
