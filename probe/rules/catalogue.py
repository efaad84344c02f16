"""Every rule, in evaluation order: causes before the symptoms that consult them (lr_too_high before the
dead ReLUs and exploding gradients it makes, dead_relu before vanishing_gradients and lr_too_low,
label_issue before loss_task_mismatch, single_class_prediction before class_imbalance)."""

from __future__ import annotations

from .activations import DeadRelu, SigmoidSaturation
from .base import Rule
from .gradients import ExplodingGradients, VanishingGradients
from .inputs import NoInputVariance, UnnormalizedInput
from .labels import ClassImbalance, LabelIssue, UnshuffledData
from .learning_rate import LrTooHigh, LrTooLow
from .model_setup import DoubleSoftmax, LossTaskMismatch, OutputActivationMismatch
from .numerics import NanLoss
from .outcomes import AccuracyStuck, SingleClassPrediction
from .system import InputBound, MemoryGrowth, NearOom, ThroughputDrop
from .updates import WeightsNotUpdating
from .validation import ValidationCurve

RULES: tuple[type[Rule], ...] = (
    NanLoss, WeightsNotUpdating, NoInputVariance, UnnormalizedInput, LabelIssue, LossTaskMismatch, DoubleSoftmax,
    OutputActivationMismatch, UnshuffledData, LrTooHigh, DeadRelu, SigmoidSaturation, VanishingGradients,
    ExplodingGradients, LrTooLow, AccuracyStuck, SingleClassPrediction, ClassImbalance, ValidationCurve,
    InputBound, ThroughputDrop, MemoryGrowth, NearOom,
)

ALERT_IDS: tuple[str, ...] = tuple(i for rule in RULES for i in rule.ids)


def all_rules() -> list[Rule]:
    return [rule() for rule in RULES]
