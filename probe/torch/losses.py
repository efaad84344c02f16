"""What a loss tells the probe: the task it implies and how to turn its inputs into predicted classes.

From a loss module's call the probe sees the model's output and the targets. The loss kind says how to read
them: cross-entropy takes logits over classes (argmax), BCELoss takes probabilities (threshold 0.5),
BCEWithLogitsLoss takes logits (threshold 0), regression losses have no classes unless the targets turn out
to be labels (a one-hot target under MSELoss is a classification trained with the wrong loss).
"""

from __future__ import annotations

from dataclasses import dataclass

# How predictions become classes.
ARGMAX = "argmax"  # output [N, C, ...] of scores; target class indices, or probabilities of the same shape
PROB = "prob"  # output probabilities; class 1 where p > 0.5
LOGIT = "logit"  # output logits; class 1 where z > 0
SIGN = "sign"  # output scores, targets in {-1, 1}; class 1 where > 0
REGRESS = "regress"  # no classes, unless the targets turn out to be labels (decided once the first batch is seen)
NONE = "none"  # no accuracy (ranking, embedding, sequence-alignment losses)


@dataclass(frozen=True)
class LossSpec:
    """The kind of a loss and how to read its inputs."""

    kind: str  # the nn module's class name, also for the functional form ("CrossEntropyLoss" for F.cross_entropy)
    rule: str
    multiclass: bool = False  # the loss itself implies one class per sample out of C

    @property
    def classifies(self) -> bool:
        return self.rule not in (REGRESS, NONE)


_SPECS = {
    "CrossEntropyLoss": LossSpec("CrossEntropyLoss", ARGMAX, multiclass=True),
    "NLLLoss": LossSpec("NLLLoss", ARGMAX, multiclass=True),
    "NLLLoss2d": LossSpec("NLLLoss2d", ARGMAX, multiclass=True),
    "MultiMarginLoss": LossSpec("MultiMarginLoss", ARGMAX, multiclass=True),
    # Distillation: log-probabilities against target probabilities; the classes are both argmaxes.
    "KLDivLoss": LossSpec("KLDivLoss", ARGMAX, multiclass=True),
    "BCELoss": LossSpec("BCELoss", PROB),
    "BCEWithLogitsLoss": LossSpec("BCEWithLogitsLoss", LOGIT),
    "MultiLabelSoftMarginLoss": LossSpec("MultiLabelSoftMarginLoss", LOGIT),
    "SoftMarginLoss": LossSpec("SoftMarginLoss", SIGN),
    "MSELoss": LossSpec("MSELoss", REGRESS),
    "L1Loss": LossSpec("L1Loss", REGRESS),
    "SmoothL1Loss": LossSpec("SmoothL1Loss", REGRESS),
    "HuberLoss": LossSpec("HuberLoss", REGRESS),
    "PoissonNLLLoss": LossSpec("PoissonNLLLoss", REGRESS),
    "GaussianNLLLoss": LossSpec("GaussianNLLLoss", REGRESS),
}

# torch.nn.functional names → the module kind they implement.
FUNCTIONAL = {
    "cross_entropy": "CrossEntropyLoss",
    "nll_loss": "NLLLoss",
    "binary_cross_entropy": "BCELoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
    "mse_loss": "MSELoss",
    "l1_loss": "L1Loss",
    "smooth_l1_loss": "SmoothL1Loss",
    "huber_loss": "HuberLoss",
    "kl_div": "KLDivLoss",
    "multi_margin_loss": "MultiMarginLoss",
    "multilabel_soft_margin_loss": "MultiLabelSoftMarginLoss",
    "soft_margin_loss": "SoftMarginLoss",
}


def spec_for(kind: str) -> LossSpec:
    """The spec of a loss kind; an unknown (custom) loss still gives its loss value, with no accuracy."""
    return _SPECS.get(kind) or LossSpec(kind, NONE)


def task_of(spec: LossSpec, output_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> str | None:
    """The task the loss and the shapes imply, before any value is seen (None: decided from the targets)."""
    if spec.rule == ARGMAX:
        return "multiclass"
    if spec.rule in (PROB, LOGIT, SIGN):
        if spec.kind == "MultiLabelSoftMarginLoss":
            return "multilabel"
        per_sample = _numel(output_shape[1:]) if len(output_shape) > 1 else 1
        return "binary" if per_sample == 1 else "multilabel"
    if spec.rule == REGRESS:
        return None
    return None


def num_classes_of(spec: LossSpec, output_shape: tuple[int, ...]) -> int | None:
    if spec.rule == ARGMAX:
        if len(output_shape) >= 2:
            return int(output_shape[1])
        return int(output_shape[0]) if output_shape else None
    if spec.rule in (PROB, LOGIT, SIGN):
        per_sample = _numel(output_shape[1:]) if len(output_shape) > 1 else 1
        return 2 if per_sample == 1 else per_sample
    return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
