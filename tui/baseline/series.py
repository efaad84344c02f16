"""A run's series as the comparison reads them: measured rows only, training metrics smoothed, and which
loss and accuracy two runs share."""

from __future__ import annotations

import numpy as np

from ..store import RankData, is_missing

# Training metrics are per batch: noisy. Their "best" and "final" are of a moving mean over this share of the
# run's measured steps (at least 1, at most SMOOTH_MAX steps): a lucky batch is not a result.
SMOOTH_SHARE = 0.05
SMOOTH_MAX = 200


def series(data: RankData, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows where `name` was measured (NaN and Inf kept), in step order."""
    col = data.columns.get(name)
    if col is None or not data.axis.n:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    vals = col.values(0, data.axis.n)
    ok = np.flatnonzero(~is_missing(vals))
    return data.axis.steps_at(ok), vals[ok].astype(np.float64)


def is_validation(name: str) -> bool:
    return name.startswith("val_")


def smoothed(values: np.ndarray, name: str) -> np.ndarray:
    """A training metric's moving mean (non-finite values left out); a validation metric as it is."""
    if is_validation(name) or len(values) < 2:
        return values
    w = int(max(1, min(SMOOTH_MAX, round(len(values) * SMOOTH_SHARE))))
    if w == 1:
        return values
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    cs = np.concatenate([[0.0], np.cumsum(v)])
    cn = np.concatenate([[0], np.cumsum(finite)])
    lo = np.maximum(np.arange(1, len(v) + 1) - w, 0)
    hi = np.arange(1, len(v) + 1)
    n = cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (cs[hi] - cs[lo]) / np.maximum(n, 1), np.nan)


def metrics(*runs: RankData) -> tuple[str | None, str | None]:
    """The loss and accuracy names to compare: validation where every run has it, else training; None when
    some run has neither."""

    def pick(val: str, train: str) -> str | None:
        if all(val in d.columns for d in runs):
            return val
        if all(train in d.columns for d in runs):
            return train
        return None

    return pick("val_loss", "loss"), pick("val_acc", "acc")
