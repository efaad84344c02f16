"""A run that worked, beside this one: `--baseline FILE` on replay, run and attach, and `check --baseline`.

The baseline is a second, read-only `RunStore` filled from its recording by the same reader and the same frame
ingestion as a replay (`RecordingReader`, or `importers.load_log` for a TensorBoard or CSVLogger log). From a
store's lowest rank this module makes:

- an `Outcome`: best loss and accuracy (validation when both runs have it, else training, smoothed), the final
  accuracy, the steps to reach an accuracy, and whether the loss diverged;
- a `Comparison` of two outcomes under a `Tolerance` (`check --baseline`: pass/fail per criterion and a verdict);
- an `Aligner`: which baseline step stands beside a step of this run, by step, epoch or samples seen (the
  charts' overlay and the header);
- `standing()`: the header's line, "vs baseline: val_acc 0.91 vs 0.93 at step 400 (−0.02) · …".

No textual here (the import-linter contracts): check uses it headless, the app and the chart read its results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accmon.probe.recording import RecordingError, RecordingReader

from .importers import LogError, load_log
from .store import RankData, RunStore, is_missing

ALIGNS = ("step", "epoch", "samples")
# Alerts that say the loss ran away (nan_loss) or that the step size threw training off (lr_too_high): a run
# that fires one where its baseline did not diverged.
DIVERGENCE_IDS = ("nan_loss", "lr_too_high")
# Training metrics are per batch: noisy. Their "best" and "final" are of a moving mean over this share of the
# run's measured steps (at least 1, at most SMOOTH_MAX steps): a lucky batch is not a result.
SMOOTH_SHARE = 0.05
SMOOTH_MAX = 200
INGEST_SLICE = 64  # frames per store.ingest call while loading


class BaselineError(Exception):
    """The baseline cannot be used: one line that says what and where."""


@dataclass
class Baseline:
    """A recording loaded for comparison: its store (read-only once loaded) and what it lacks."""

    path: str
    store: RunStore
    problems: list[str] = field(default_factory=list)  # damage the reader found (the file was cut short, ...)
    _outcome: dict[tuple[str, str], Outcome] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> RankData:
        return self.store.ranks[min(self.store.ranks)]

    @property
    def truncated(self) -> str | None:
        """Why the baseline is not a whole run (said in the header), or None."""
        if self.problems:
            return f"truncated ({self.problems[0]})"
        status = self.store.status()
        if status is None:
            return "truncated (no end frame)"
        if status == "truncated":
            return "truncated (steps lost)"
        return None

    def outcome(self, loss: str, acc: str) -> Outcome:
        """The baseline's outcome for these metric names, computed once (the baseline does not change)."""
        key = (loss, acc)
        if key not in self._outcome:
            self._outcome[key] = outcome(self.data, loss=loss, acc=acc, alerts=self.store.alerts.by_key.values())
        return self._outcome[key]


def load_baseline(path: str) -> Baseline:
    """Read a recording (or a TensorBoard / CSVLogger log) into a store, with replay's reader and the store's own
    ingestion. Raises BaselineError, one line, when it cannot be read or holds no training step; a file cut
    short is used for what it has (`problems`)."""
    reader: RecordingReader | None = None
    try:
        try:
            reader = RecordingReader(path)
            frames: Iterable[dict[str, Any]] = reader.frames()
        except RecordingError as not_a_recording:
            log = load_log(path)
            if log is None:
                raise BaselineError(f"baseline {not_a_recording}") from None
            frames = log[1]
        store = RunStore()
        for _ in tee(frames, store):
            pass
    except BaselineError:
        raise
    except (RecordingError, LogError) as exc:
        raise BaselineError(f"baseline {exc}") from None
    except OSError as exc:
        raise BaselineError(f"baseline {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever a hostile file finds: one line, never a traceback
        raise BaselineError(f"baseline {path}: cannot be read ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    problems = [f"byte {p.offset}: {p.message}" for p in reader.problems] if reader is not None else []
    return from_store(path, store, problems)


def from_store(path: str, store: RunStore, problems: list[str]) -> Baseline:
    """A baseline from a store already filled (check fills one while it diagnoses the file)."""
    if not any(d.axis.n for d in store.ranks.values()):
        why = f" ({problems[0]})" if problems else ""
        raise BaselineError(f"baseline {path}: no training step recorded{why}")
    # A rank with no step (a meta frame only) is no baseline: keep the ranks that have steps.
    for r in [r for r, d in store.ranks.items() if not d.axis.n]:
        del store.ranks[r]
    return Baseline(path, store, problems)


def tee(frames: Iterable[dict[str, Any]], store: RunStore) -> Iterable[dict[str, Any]]:
    """The frames, unchanged, also ingested into `store` (a slice at a time) as they pass."""
    batch: list[dict[str, Any]] = []
    for f in frames:
        batch.append(f)
        if len(batch) >= INGEST_SLICE:
            store.ingest(batch)
            batch = []
        yield f
    store.ingest(batch)


# -- series ---------------------------------------------------------------------------------------------------
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


# -- outcome --------------------------------------------------------------------------------------------------
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


# -- comparison -----------------------------------------------------------------------------------------------
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


def _num3(v: float | None) -> str:
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


# -- alignment ------------------------------------------------------------------------------------------------
class Progress:
    """A run's progress, in epochs or in samples seen, at anchor steps: kept up to date incrementally (each
    `update` reads only the rows added since the last), so a live run of ten million steps costs per tick what
    its new rows cost. Epochs: an anchor at the first step of each epoch. Samples: each step's batch is
    samples_per_s × step_time, else the loader's batch size (facts), else the last batch known; an anchor every
    THIN rows and at the newest row."""

    THIN = 64

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows = 0
        self.xs: list[float] = []
        self.us: list[float] = []
        self._epoch: float | None = None
        self._total = 0.0
        self._prev_step: float | None = None
        self._batch: float | None = None  # the last batch size known
        self._tail: tuple[float, float] | None = None

    def update(self, data: RankData, facts: dict[str, Any]) -> None:
        n = data.axis.n
        if n <= self.rows:
            return
        r0, self.rows = self.rows, n
        steps = data.axis.steps_at(np.arange(r0, n)).astype(np.float64)
        if self.kind == "epoch":
            col = data.columns.get("epoch")
            if col is None:
                return
            v = col.values(r0, n)
            ok = ~is_missing(v) & np.isfinite(v)
            for st, e in zip(steps[ok].tolist(), v[ok].astype(np.float64).tolist()):
                if e != self._epoch:
                    self.xs.append(st)
                    self.us.append(e)
                    self._epoch = e
            return
        batch = np.full(n - r0, np.nan)
        rate, dt = data.columns.get("samples_per_s"), data.columns.get("step_time")
        if rate is not None and dt is not None:
            rv, tv = rate.values(r0, n), dt.values(r0, n)
            with np.errstate(invalid="ignore", over="ignore"):
                b = np.where(is_missing(rv) | is_missing(tv), np.nan, np.rint(rv.astype(np.float64) * tv))
            batch = np.where(np.isfinite(b) & (b > 0), b, np.nan)
        size = facts.get("batch_size")
        if isinstance(size, (int, float)) and not isinstance(size, bool) and math.isfinite(size) and size > 0:
            batch = np.where(np.isnan(batch), float(size), batch)
        known = np.flatnonzero(~np.isnan(batch))
        if not len(known) and self._batch is None:
            return  # nothing says how many samples a step takes (yet)
        # Carry the last known batch forward over the rows that do not say theirs.
        fill = np.full(len(batch), self._batch if self._batch is not None else batch[known[0]])
        idx = np.maximum.accumulate(np.where(~np.isnan(batch), np.arange(len(batch)), -1))
        batch = np.where(idx >= 0, batch[np.maximum(idx, 0)], fill)
        self._batch = float(batch[-1])
        # A run logged every k-th step saw k batches between two rows.
        prev = self._prev_step if self._prev_step is not None else steps[0] - 1
        gaps = np.diff(np.concatenate([[prev], steps])).clip(1, None)
        cum = self._total + np.cumsum(batch * gaps)
        keep = np.flatnonzero((np.arange(r0, n) % self.THIN) == 0)
        self.xs += steps[keep].tolist()
        self.us += cum[keep].tolist()
        self._total, self._prev_step = float(cum[-1]), float(steps[-1])
        self._tail = (float(steps[-1]), float(cum[-1]))

    def anchors(self, last_step: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, progress), increasing; None when the run says nothing of it."""
        if not self.xs:
            return None
        xs, us = list(self.xs), list(self.us)
        if self.kind == "epoch":
            # The current epoch ends where an epoch as long as the previous one would (one past the last step
            # when it is the only one).
            if len(xs) >= 2:
                length = (xs[-1] - xs[-2]) / max(us[-1] - us[-2], 1e-9)
            else:
                length = max(float(last_step if last_step is not None else xs[-1]) - xs[-1] + 1, 1.0)
            xs.append(xs[-1] + length)
            us.append(us[-1] + 1)
        elif self._tail is not None and self._tail[0] > xs[-1]:
            xs.append(self._tail[0])
            us.append(self._tail[1])
        x, u = np.array(xs), np.array(us)
        ok = np.concatenate([[True], (np.diff(x) > 0) & (np.diff(u) > 0)])  # strictly increasing, for interp
        return x[ok], u[ok]


def _interp(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """np.interp, extended linearly beyond both ends (a run further on than its baseline)."""
    if len(xs) == 1:
        return np.full(len(x), ys[0]) + (x - xs[0])
    y = np.interp(x, xs, ys)
    lo, hi = x < xs[0], x > xs[-1]
    if lo.any():
        y[lo] = ys[0] + (x[lo] - xs[0]) * (ys[1] - ys[0]) / max(xs[1] - xs[0], 1e-12)
    if hi.any():
        y[hi] = ys[-1] + (x[hi] - xs[-1]) * (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
    return y


class Aligner:
    """Which baseline step stands beside a step of this run: the same step, the same point of the same epoch,
    or the same number of samples seen. Falls back to steps (and says so) when a run lacks what it needs."""

    def __init__(self, baseline: Baseline, align: str = "step") -> None:
        if align not in ALIGNS:
            raise ValueError(f"--align {align!r}: one of {', '.join(ALIGNS)}")
        self.baseline = baseline
        self.align = align
        self._base: tuple[np.ndarray, np.ndarray] | None = None
        if align != "step":
            p = Progress(align)
            p.update(baseline.data, baseline.store.facts)
            self._base = p.anchors(baseline.data.axis.last)
        self._live: dict[int, Progress] = {}  # per live RankData (by id): its progress, kept up to date
        self.memo: dict[tuple, Any] = {}  # the header's first-reach scans (standing)

    def _live_anchors(self, live: RankData, facts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        p = self._live.get(id(live))
        if p is None or p.rows > live.axis.n:  # a new store (the run restarted): start again
            if len(self._live) > 64:
                self._live.clear()
            p = self._live[id(live)] = Progress(self.align)
        p.update(live, facts)
        return p.anchors(live.axis.last)

    def fallback(self, live: RankData | None, facts: dict[str, Any]) -> str | None:
        """Why this alignment cannot be used (then steps are), or None."""
        if self.align == "step":
            return None
        what = "epochs" if self.align == "epoch" else "samples seen"
        if self._base is None:
            return f"the baseline has no {what}: aligned by step"
        if live is not None and self._live_anchors(live, facts) is None:
            return f"this run has no {what} yet: aligned by step"
        return None

    def to_baseline(self, live: RankData | None, facts: dict[str, Any], steps: np.ndarray) -> np.ndarray:
        """The baseline steps beside these steps of this run (floats)."""
        steps = np.asarray(steps, dtype=np.float64)
        if self.align == "step" or self._base is None or live is None:
            return steps
        mine = self._live_anchors(live, facts)
        if mine is None:
            return steps
        coord = _interp(steps, *mine)
        return _interp(coord, self._base[1], self._base[0])


# -- the header's line ----------------------------------------------------------------------------------------
def level_at(data: RankData, name: str, step: float) -> float | None:
    """The value of `name` at `step`: the newest validation value at or before it; for a training metric the
    mean of the last measured values up to it (a batch's accuracy is noise)."""
    col = data.columns.get(name)
    if col is None or not data.axis.n:
        return None
    row = int(data.axis.rows(np.array([int(min(max(step, -2**62), 2**62))], dtype=np.int64), "right")[0])
    vals = col.values(max(0, row - 512), row)
    vals = vals[~is_missing(vals)].astype(np.float64)
    if not len(vals):
        return None
    if is_validation(name):
        return float(vals[-1])
    w = int(max(1, min(SMOOTH_MAX, round(col.measured * SMOOTH_SHARE))))
    tail = vals[-w:]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if len(tail) else float(vals[-1])


def standing(live: RankData | None, facts: dict[str, Any], aligner: Aligner, step: int | None) -> str:
    """One line for the header: how this run stands against the baseline at `step` (its newest, or the
    replay's playhead)."""
    base = aligner.baseline
    note = f" · baseline {base.truncated}" if base.truncated else ""
    # A baseline cut short is said first (the line is cut at the terminal's width), its details last.
    vs = "vs truncated baseline" if base.truncated else "vs baseline"
    align = aligner.fallback(live, facts) or (f"aligned by {aligner.align}" if aligner.align != "step" else "")
    align = f" · {align}" if align else ""
    if live is None or step is None or not live.axis.n:
        return f"{vs} {_short(base.path)}: waiting for steps{align}{note}"
    loss, acc = metrics(live, base.data)
    name = acc or loss
    if name is None:
        return f"{vs} {_short(base.path)}: no loss or accuracy in common{align}{note}"
    b_step = float(aligner.to_baseline(live, facts, np.array([step]))[0])
    mine = level_at(live, name, step)
    theirs = level_at(base.data, name, b_step) if b_step >= (base.data.axis.first or 0) else None
    words = f"{vs}: {name} {_num3(mine)} vs {_num3(theirs)} at step {step}"
    if aligner.align != "step" and aligner.fallback(live, facts) is None:
        words += f" (baseline step {int(round(b_step))})"
    if mine is not None and theirs is not None and math.isfinite(mine) and math.isfinite(theirs):
        better = (mine - theirs) if name == acc else (theirs - mine)
        words += f" ({_signed(mine - theirs)}, {'ahead' if better > 0 else 'behind' if better < 0 else 'level'})"
    if acc is not None:
        target = base.outcome(loss or "", acc).final_acc
        if target is not None:
            reached = _first_reach(live, acc, target, step, aligner.memo)
            base_at = base.outcome(loss or "", acc).steps_to(target)
            took = f" (the baseline took {base_at} steps)" if base_at is not None else ""
            words += f" · reached baseline's final {acc} {target:.3g}: " + (
                "not yet" if reached is None else f"at step {reached}") + took
    return words + align + note


def _first_reach(data: RankData, name: str, target: float, up_to: int, memo: dict[tuple, Any]) -> int | None:
    """The first step at or before `up_to` where `name` (smoothed) reached `target`. Scans only the rows not
    scanned yet (memo): the header asks on every redraw of a run that grows."""
    key = (id(data), name, target)
    found, scanned = memo.get(key, (None, 0))
    if found is not None:
        return found if found <= up_to else None
    n = int(data.axis.rows(np.array([up_to], dtype=np.int64), "right")[0])
    col = data.columns.get(name)
    if col is None or n <= scanned:
        return None
    w = 0 if is_validation(name) else int(max(1, min(SMOOTH_MAX, round(col.measured * SMOOTH_SHARE))))
    r0 = max(0, scanned - 4 * w)
    vals = col.values(r0, n)
    ok = np.flatnonzero(~is_missing(vals))
    sm = smoothed(vals[ok].astype(np.float64), name)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(sm >= target)
    if len(hit):
        found = int(data.axis.steps_at(np.array([r0 + ok[hit[0]]]))[0])
    memo[key] = (found, n)
    return found


def _signed(v: float) -> str:
    return f"{'+' if v >= 0 else '−'}{abs(v):.2g}" if abs(v) >= 0.005 or v == 0 else f"{'+' if v > 0 else '−'}{abs(v):.1e}"


def _short(path: str) -> str:
    return os.path.basename(path) or path
