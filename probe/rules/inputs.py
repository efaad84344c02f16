"""unnormalized_input and no_input_variance: what the model is fed, from the input batch statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .base import Finding, Rule, ended, num
from .health import Health
from .state import RunState
from .thresholds import CONST_FEATURES_FRACTION, FEATURE_SCALE_MIN_ABSMAX, FEATURE_SCALE_RATIO, UNNORMALIZED_SCALE

SAMPLES = 5


def stat(st: RunState, column: str, fact: str | None, now: int) -> float | None:
    """Median of the recent samples of an input metric, else the first batch's fact."""
    r = st.recent(column, now, SAMPLES)
    if r is not None:
        return r[0]
    if fact is None:
        return None
    return _number(st.fact("inputs", fact))


def _number(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


class UnnormalizedInput(Rule):
    ids = ("unnormalized_input",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        mean, std = stat(st, "input_mean", "mean", h.now), stat(st, "input_std", "std", h.now)
        lo, hi = stat(st, "input_min", "min", h.now), stat(st, "input_max", "max", h.now)
        if mean is None and std is None:
            return []
        out = []
        scale = max(abs(mean or 0.0), std or 0.0)
        was = "scale" in st.active.get("unnormalized_input", set())
        evidence = {"mean": mean, "std": std, "min": lo, "max": hi, "threshold": UNNORMALIZED_SCALE}
        if scale >= UNNORMALIZED_SCALE or (was and scale >= UNNORMALIZED_SCALE / 2):
            rng = f", range [{num(lo, 3)}, {num(hi, 3)}]" if lo is not None and hi is not None else ""
            out.append(Finding("unnormalized_input", True, "scale", "warning",
                               f"inputs are not normalised: mean {num(mean, 3)}, std {num(std, 3)}{rng}; "
                               "networks train best on inputs of about zero mean and unit variance",
                               evidence,
                               "scale the inputs: images / 255 (torchvision ToTensor) then Normalize(mean, std); "
                               "features (x - mean) / std with the training set's statistics (sklearn StandardScaler)",
                               score=scale))
        else:
            out.append(ended("unnormalized_input", "scale"))
        ratio = stat(st, "input_feat_absmax_ratio", None, h.now)
        measure = "mean magnitude"
        if ratio is None:
            fmin, fmax = _number(st.fact("inputs", "feat_std_min")), _number(st.fact("inputs", "feat_std_max"))
            if fmin and fmax and fmin > 0:
                ratio, measure = fmax / fmin, "spread (std)"
        absmax = max(abs(lo or 0.0), abs(hi or 0.0))
        if ratio is not None:
            if ratio >= FEATURE_SCALE_RATIO and absmax >= FEATURE_SCALE_MIN_ABSMAX:
                out.append(Finding("unnormalized_input", True, "feature_scales", "warning",
                                   f"input features differ in scale by {ratio:,.0f}x (largest to smallest {measure}), "
                                   f"with values up to {num(absmax, 3)}: one learning rate cannot suit them all",
                                   {"feature_scale_ratio": ratio, "max_abs": absmax, "threshold": FEATURE_SCALE_RATIO},
                                   "standardise each feature on its own ((x - mean) / std per column, "
                                   "sklearn StandardScaler), or log-transform heavy-tailed features",
                                   score=ratio))
            else:
                out.append(ended("unnormalized_input", "feature_scales"))
        return out


class NoInputVariance(Rule):
    ids = ("no_input_variance",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        frac = stat(st, "input_const_frac", None, h.now)
        features = _number(st.fact("inputs", "features"))
        if frac is None:
            const = _number(st.fact("inputs", "const_features"))
            if const is not None and features:
                frac = const / features
        std = stat(st, "input_std", "std", h.now)
        if frac is None and std is None:
            return []
        n = f" {int(features)}" if features else ""
        if (frac is not None and frac >= 0.999) or std == 0:
            return [Finding("no_input_variance", True, "constant", "critical",
                            f"the inputs do not vary: every one of the{n} input features is the same for every "
                            "sample in the batch, so no class can be told from another",
                            {"constant_fraction": frac, "input_std": std, "features": features},
                            "check the preprocessing: a normalisation dividing by a zero std, a mask or a "
                            "multiplication by 0, the wrong tensor fed to the model (the targets, an index, a buffer)"),
                    ended("no_input_variance", "features")]
        out = [ended("no_input_variance", "constant")]
        was = "features" in st.active.get("no_input_variance", set())
        if frac is not None and (frac >= CONST_FEATURES_FRACTION or (was and frac >= CONST_FEATURES_FRACTION - 0.1)):
            out.append(Finding("no_input_variance", True, "features", "warning" if h.in_trouble else "info",
                               f"{frac:.0%} of the{n} input features are constant across the batch: they carry "
                               "nothing the model can learn from",
                               {"constant_fraction": frac, "features": features, "threshold": CONST_FEATURES_FRACTION,
                                **(h.evidence() if h.in_trouble else {})},
                               "drop constant features, or find where the preprocessing flattens them (a fill "
                               "value, a clipped range, a column of ids)", score=frac))
        elif frac is not None:
            out.append(ended("no_input_variance", "features"))
        return out
