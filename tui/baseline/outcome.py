"""A run's outcome (best loss and accuracy, the steps to an accuracy, divergence) and two outcomes compared
under a tolerance: `check --baseline`'s verdict, criterion by criterion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store import RankData
from .series import metrics, series, smoothed

if TYPE_CHECKING:
    from .load import Baseline

# Alerts that say the loss ran away (nan_loss) or that the step size threw training off (lr_too_high): a run
# that fires one where its baseline did not diverged.
DIVERGENCE_IDS = ("nan_loss", "lr_too_high")


@dataclass(frozen=True)
class Outcome:
    """What a run reached, in the few numbers a comparison needs."""

    loss_name: str | None
    acc_name: str | None
    best_loss: float | None = None
    best_loss_step: int | None = None
    best_acc: float | None = None
    best_acc_step: int | None = None
    final_acc: float | None = None
    first_step: int | None = None
    last_step: int | None = None
    diverged: str | None = None  # why, when the loss diverged
    acc_steps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False, compare=False)
    acc_curve: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def steps_to(self, target: float) -> int | None:
        """Steps from the run's first step until its accuracy (smoothed for training accuracy) first reached
        `target`; None if it never did."""
        if self.first_step is None or not len(self.acc_curve):
            return None
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(self.acc_curve >= target)
        return int(self.acc_steps[hit[0]]) - self.first_step if len(hit) else None


def _diverged(data: RankData, loss_names: tuple[str, ...], alerts: Iterable[dict[str, Any]]) -> str | None:
    for name in loss_names:
        steps, vals = series(data, name)
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            return f"{name} was {vals[bad[0]]:g} at step {int(steps[bad[0]])}"
    for a in alerts:
        if isinstance(a, dict) and a.get("id") in DIVERGENCE_IDS:
            return f"{a['id']} at step {a.get('step')}"
    for name in loss_names:
        steps, vals = series(data, name)
        sm = smoothed(vals, name)
        fin = np.isfinite(sm)
        if fin.sum() >= 4:
            s = sm[fin]
            start, best, end = float(s[0]), float(np.min(s)), float(s[-1])
            # Ran away: ends above where it started and at more than twice its best (lr_too_high's shape).
            if end > start and best > 0 and end > 2 * best:
                return f"{name} ended at {end:.4g}, above its start {start:.4g} (best {best:.4g})"
    return None


def outcome(data: RankData, *, loss: str | None, acc: str | None, alerts: Iterable[dict[str, Any]] = ()) -> Outcome:
    """A run's outcome from its store's rank data, for the loss and accuracy names given (see `metrics`)."""
    kw: dict[str, Any] = {"first_step": data.axis.first, "last_step": data.axis.last}
    if loss is not None:
        steps, vals = series(data, loss)
        sm = smoothed(vals, loss)
        fin = np.flatnonzero(np.isfinite(sm))
        if len(fin):
            i = fin[np.argmin(sm[fin])]
            kw.update(best_loss=float(sm[i]), best_loss_step=int(steps[i]))
    if acc is not None:
        steps, vals = series(data, acc)
        sm = smoothed(vals, acc)
        fin = np.flatnonzero(np.isfinite(sm))
        if len(fin):
            i = fin[np.argmax(sm[fin])]
            kw.update(best_acc=float(sm[i]), best_acc_step=int(steps[i]), final_acc=float(sm[fin[-1]]),
                      acc_steps=steps[fin], acc_curve=sm[fin])
    names = tuple(n for n in ("loss", "val_loss") if n in data.columns)
    return Outcome(loss, acc, diverged=_diverged(data, names, alerts), **kw)


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the baseline still passes.

    loss: relative (0.05: the best loss may be up to 5 % above the baseline's); acc: absolute (0.05: the best
    accuracy may be up to 0.05 below); steps: relative (0.25: reaching the baseline's final accuracy may take up
    to 25 % more steps than the baseline took). The reach target is the baseline's final accuracy less `acc`.
    """

    loss: float = 0.05
    acc: float = 0.05
    steps: float = 0.25

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Tolerance:
        """`0.1` (loss and acc), `loss=0.1`, `acc=0.02`, `steps=0.5`, several allowed. ValueError when wrong."""
        t = cls()
        for spec in specs:
            for part in str(spec).split(","):
                key, sep, value = part.strip().rpartition("=")
                try:
                    v = float(value)
                except ValueError:
                    raise ValueError(f"tolerance {part.strip()!r}: not a number (e.g. 0.05, loss=0.1, steps=0.5)") from None
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"tolerance {part.strip()!r}: must be a number ≥ 0")
                if not sep:
                    t = Tolerance(v, v, t.steps)
                elif key in ("loss", "acc", "steps"):
                    t = Tolerance(**{**vars(t), key: v})
                else:
                    raise ValueError(f"tolerance {part.strip()!r}: the keys are loss, acc and steps")
        return t


@dataclass(frozen=True)
class Criterion:
    name: str  # best_loss, best_acc, steps_to_baseline_acc, divergence
    metric: str | None
    new: Any
    baseline: Any
    difference: Any
    tolerance: Any
    passed: bool
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"criterion": self.name, "metric": self.metric, "new": self.new, "baseline": self.baseline,
                "difference": self.difference, "tolerance": self.tolerance, "pass": self.passed, "note": self.note}


@dataclass(frozen=True)
class Comparison:
    criteria: tuple[Criterion, ...]
    tolerance: Tolerance
    baseline_path: str
    baseline_note: str | None = None  # the baseline is truncated, ...

    @property
    def worse(self) -> bool:
        return any(not c.passed for c in self.criteria)

    @property
    def verdict(self) -> str:
        return "worse" if self.worse else "ok"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.baseline_path, "verdict": self.verdict, "note": self.baseline_note,
                "tolerance": vars(self.tolerance), "criteria": [c.as_json() for c in self.criteria]}

    def lines(self) -> list[str]:
        """The comparison as `check` prints it: a verdict line, then one line per criterion."""
        out = [f"vs baseline {self.baseline_path}: {'WORSE' if self.worse else 'ok'}"
               + (f" (the baseline is {self.baseline_note})" if self.baseline_note else "")]
        for c in self.criteria:
            out.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.note}")
        return out


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def num3(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def compare(new: Outcome, base: Outcome, tol: Tolerance, *, baseline_path: str = "",
            baseline_note: str | None = None) -> Comparison:
    """New against baseline: each criterion with its values and pass/fail (see Tolerance for the semantics)."""
    out: list[Criterion] = []
    if new.loss_name is not None and base.best_loss is not None:
        limit = base.best_loss + tol.loss * abs(base.best_loss)
        ok = new.best_loss is not None and new.best_loss <= limit
        diff = None if new.best_loss is None else new.best_loss - base.best_loss
        out.append(Criterion("best_loss", new.loss_name, new.best_loss, base.best_loss, diff, tol.loss, ok,
                             f"best {new.loss_name} {_num(new.best_loss)} vs {_num(base.best_loss)} "
                             f"(at most {_num(limit)}: +{tol.loss:g} relative)"))
    if new.acc_name is not None and base.best_acc is not None:
        limit = base.best_acc - tol.acc
        ok = new.best_acc is not None and new.best_acc >= limit
        diff = None if new.best_acc is None else new.best_acc - base.best_acc
        out.append(Criterion("best_acc", new.acc_name, new.best_acc, base.best_acc, diff, tol.acc, ok,
                             f"best {new.acc_name} {_num(new.best_acc)} vs {_num(base.best_acc)} "
                             f"(at least {_num(limit)}: −{tol.acc:g} absolute)"))
    if new.acc_name is not None and base.final_acc is not None:
        target = base.final_acc - tol.acc
        base_steps = base.steps_to(target)
        new_steps = new.steps_to(target)
        limit_steps = None if base_steps is None else base_steps * (1 + tol.steps)
        ok = new_steps is not None and limit_steps is not None and new_steps <= max(limit_steps, base_steps or 0)
        diff = None if new_steps is None or base_steps is None else new_steps - base_steps
        said = "never" if new_steps is None else f"{new_steps} steps"
        out.append(Criterion("steps_to_baseline_acc", new.acc_name, new_steps, base_steps, diff, tol.steps, ok,
                             f"reached {new.acc_name} {target:.4g} (the baseline's final {base.final_acc:.4g} "
                             f"− {tol.acc:g}): {said} vs {base_steps} steps (at most ×{1 + tol.steps:g})"))
    diverged = new.diverged is not None and base.diverged is None
    out.append(Criterion("divergence", new.loss_name, new.diverged, base.diverged, None, None, not diverged,
                         ("loss diverged where the baseline's did not: " + str(new.diverged)) if diverged else
                         ("loss did not diverge" if new.diverged is None
                          else f"loss diverged ({new.diverged}), as the baseline's did ({base.diverged})")))
    return Comparison(tuple(out), tol, baseline_path, baseline_note)


def compare_runs(new: RankData, new_alerts: Iterable[dict[str, Any]], base: Baseline,
                 base_alerts: Iterable[dict[str, Any]], tol: Tolerance) -> Comparison:
    """Compare a run's data and alerts with a loaded baseline's, on the metrics both have (a run that recorded no
    step is compared on the baseline's: it reached nothing)."""
    loss, acc = metrics(new, base.data) if new.axis.n else metrics(base.data)
    return compare(outcome(new, loss=loss, acc=acc, alerts=new_alerts),
                   outcome(base.data, loss=loss, acc=acc, alerts=base_alerts), tol, baseline_path=base.path,
                   baseline_note=base.truncated)
