"""lr_too_high and lr_too_low: the size of each step against the size of the weights.

‖Δw‖/‖w‖ per optimizer step is scale-free: it does not depend on the loss scale or on how the learning rate
is parametrised (SGD, Adam). CS231n's rule of thumb puts it near 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import Finding, Rule, ended, num
from .health import Health
from .state import RunState
from .thresholds import FLAT_ACC_LOW, LR_HIGH_RATIO, LR_LOW_RATIO, LR_REGRESS_FACTOR, LR_REGRESS_RATIO

SAMPLES = 5


def step_size(ratio: float) -> str:
    """‖Δw‖/‖w‖ in words a person reads at a glance: '12% of their size', '250% of their size', '58× their size',
    'over 1,000× their size' (a diverged run's 587,913 read '58791396% of their size')."""
    if ratio != ratio:
        return "a share of their size that is not a number"
    if not ratio < 10:  # inf included: past any size worth a number
        return "over 1,000× their size" if not ratio < 1000 else f"{ratio:.0f}× their size"
    return f"{ratio:.1%} of their size" if ratio < 0.1 else f"{ratio:.0%} of their size"


def update_ratios(st: RunState, now: int) -> tuple[float | None, dict[str, float]]:
    """(overall ‖Δw‖/‖w‖, per layer), medians of recent finite samples."""
    overall = st.recent("update_ratio", now, SAMPLES)
    layers = {layer: m for layer, (m, _, _) in st.layer_recent("update_ratio", now, SAMPLES).items()}
    return (overall[0] if overall else None), layers


def _peak(st: RunState, now: int, k: int = 10) -> float | None:
    """Largest finite overall update ratio among the last `k` samples and the run's first steps (kept for good:
    a diverging run's damage is often done in its first steps, and by the time the loss counts as diverging
    the large updates are no longer among the recent samples; the first steps are sampled at any cadence)."""
    s = st.col("update_ratio")
    if s is None:
        return None
    v = s.last(now, k)[1]
    v = v[np.isfinite(v)]
    first = [x for step, x in st.first.get("update_ratio", []) if step <= now and np.isfinite(x)]
    peaks = ([float(v.max())] if len(v) else []) + ([max(first)] if first else [])
    return max(peaks) if peaks else None


def current_lr(st: RunState, now: int) -> float | None:
    s = st.col("lr")
    if s is not None:
        v = s.last(now, 1)[1]
        if len(v):
            return float(v[-1])
    groups = [g for o in st.optimizers if isinstance(o.get("param_groups"), list)
              for g in o["param_groups"] if isinstance(g, dict)]
    lrs = [g["lr"] for g in groups if isinstance(g.get("lr"), (int, float)) and not isinstance(g.get("lr"), bool)]
    return float(lrs[0]) if lrs else None


def optimizer_kind(st: RunState) -> str:
    opts = st.optimizers
    return str(opts[0].get("kind", "the optimizer")) if opts else "the optimizer"


class LrTooHigh(Rule):
    ids = ("lr_too_high",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if not st.first.get("loss") and st.col("loss") is not None:
            # Not one finite loss since the first step: NaN inputs or a NaN-producing loss, not a rate that broke
            # a model that worked (nan_loss says so).
            return [ended("lr_too_high")]
        if st.is_active("weights_not_updating", "symmetric"):
            # Zero (or constant) weights: an update ratio against a zero weight means nothing, and the cause is named.
            return [ended("lr_too_high")]
        if not (h.diverging or h.stuck):
            # The rate does not fix itself: the alert holds until the loss is back below where it started.
            recovered = h.loss_now is not None and h.loss_first is not None and h.loss_now < h.loss_first
            return [ended("lr_too_high")] if recovered or not st.is_active("lr_too_high") else []
        overall, layers = update_ratios(st, h.now)
        ratio = overall if overall is not None else (max(layers.values()) if layers else None)
        if h.diverging:
            # A diverging run often ends with dead layers that no longer move: the steps that broke it were
            # the large ones just before.
            peak = _peak(st, h.now)
            ratio = peak if peak is not None else ratio
        high = ratio is not None and ratio >= LR_HIGH_RATIO
        # Milder: the run learned, then lost it (the loss back above its start, well above its best) while the
        # steps stay large: a rate a few times too high, with momentum, bounces out of what it learned.
        regressed = (h.stuck and ratio is not None and ratio >= LR_REGRESS_RATIO and h.loss_now is not None
                     and h.loss_best is not None and h.loss_start is not None and h.loss_now > h.loss_start
                     and h.loss_now >= LR_REGRESS_FACTOR * h.loss_best and not st.is_active("unshuffled_data"))
        # A diverging loss with no update data to say otherwise is still most often the learning rate.
        active = (h.diverging and (high or ratio is None)) or (h.stuck and high) or regressed
        if not active:
            if st.broken:
                return []  # NaN weights: what they do now says nothing about the rate that broke them
            recovered = h.loss_now is not None and h.loss_first is not None and h.loss_now < h.loss_first
            if st.is_active("lr_too_high") and h.stuck and not recovered:
                # A run the rate broke early (dead units, a collapsed output) stays stuck with small updates: the
                # cause seen then still explains the symptom now. Held until the loss is back below its start.
                return []
            return [ended("lr_too_high")] if (ratio is not None or st.col("loss") is not None) else []
        lr = current_lr(st, h.now)
        evidence = {"lr": lr, "optimizer": optimizer_kind(st), "update_ratio": ratio,
                    "threshold": LR_HIGH_RATIO, **h.evidence()}
        if layers:
            evidence["layers"] = {k: num(v) for k, v in layers.items()}
        if regressed and not high and not h.diverging and ratio is not None:  # regressed: ratio is known
            evidence.update(loss_best=num(h.loss_best), regress_factor=LR_REGRESS_FACTOR)
            what = (f"the loss came down to {h.loss_best:.4g}, then climbed back to {h.loss_now:.4g}, with steps "
                    f"changing the weights by {step_size(ratio)}")
        elif ratio is not None:
            what = f"each step changes the weights by {step_size(ratio)}"
        else:
            what = "the loss is diverging"
        lr_text = f" (lr {lr:.3g})" if lr is not None else ""
        return [Finding("lr_too_high", True, None, "warning",
                        f"{what}{lr_text} and {h.reasons[0] if h.reasons else 'training is unstable'}",
                        evidence,
                        f"lower the learning rate 3-10x{lr_text}: typical starting points are 1e-3 for Adam and "
                        "0.01-0.1 for SGD; add a warm-up and clip gradients (clip_grad_norm_(..., 1.0))",
                        score=ratio if ratio else 1.0)]


class LrTooLow(Rule):
    ids = ("lr_too_low",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken:
            return []
        if not h.stuck or h.warming_up:
            return [ended("lr_too_low")]
        # A model that is already good and learns little more (fine-tuning from a checkpoint, a converged run) is
        # not stuck for want of a larger rate.
        if not (h.at_chance or h.val_at_chance) and h.acc_now is not None and h.acc_chance is not None \
                and h.acc_now >= h.acc_chance + FLAT_ACC_LOW * (1 - h.acc_chance):
            return [ended("lr_too_low")]
        overall, layers = update_ratios(st, h.now)
        # The layer that moves most: a dead or vanished layer elsewhere must not make the rate look low.
        top = max(layers.values()) if layers else overall
        if top is None:
            return []
        # Dead or vanished layers make every update small whatever the rate: their rules say so instead.
        explained = st.is_active("dead_relu") or st.is_active("vanishing_gradients") or st.is_active("lr_too_high") \
            or st.is_active("exploding_gradients") \
            or st.is_active("weights_not_updating", "symmetric")
        if not (0 < top < LR_LOW_RATIO and h.stuck and not h.warming_up) or explained:
            return [ended("lr_too_low")]
        lr = current_lr(st, h.now)
        evidence = {"lr": lr, "optimizer": optimizer_kind(st), "largest_update_ratio": top,
                    "threshold": LR_LOW_RATIO, **h.evidence()}
        if layers:
            evidence["layers"] = {k: num(v) for k, v in layers.items()}
        lr_text = f" (lr {lr:.3g})" if lr is not None else ""
        return [Finding("lr_too_low", True, None, "warning",
                        f"updates are tiny: the most any layer moves per step is {num(top, 2)} of its weights{lr_text}, "
                        f"and {h.reasons[0] if h.reasons else 'the loss barely moves'}",
                        evidence,
                        f"raise the learning rate 10x at a time{lr_text}: typical starting points are 1e-3 for Adam "
                        "and 0.01-0.1 for SGD; or run a learning-rate range test",
                        score=1.0 / top)]
