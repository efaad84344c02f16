"""What the rules know about a run: its facts, the recent values of every metric, and class counts."""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from typing import Any

import numpy as np

from .series import Series
from .thresholds import SERIES_CAP, START_STEPS

# The metrics the rules read (docs/frames.md); others (act_mean/*, samples_per_s, ...) are not kept.
USED = frozenset({"loss", "acc", "val_loss", "val_acc", "lr", "epoch", "grad_norm", "update_ratio", "nonfinite_grads",
                  "input_mean", "input_std", "input_min", "input_max", "input_const_frac", "input_feat_absmax_ratio",
                  "batch_top_frac", "batch_top_class", "batch_classes", "pred_top_frac",
                  "grad_norm_preclip", "clip_frac", "train_eval_loss", "train_eval_acc", "batch_bal_acc",
                  "step_time", "data_wait", "rss"})
USED_PREFIXES = ("grad_norm/", "update_ratio/", "weight_norm/", "act_zero/", "act_sat/", "cuda_allocated/",
                 "cuda_reserved/", "cuda_max_allocated/")
# Metrics judged against a longer history than SERIES_CAP values: a run's own norm of step time.
LONG_SERIES = {"step_time": 2048, "data_wait": 2048}
NUMBERS = {int, float}
# Metrics whose first non-finite value is remembered (the step a NaN loss began).
NONFINITE_WATCH = frozenset({"loss", "val_loss"})
# Metrics measured every step whose extremes are kept (issue 15 item 7): the largest value since the rules' last
# look, and the largest look so far. A burst between two looks (a loss from 1 to 5,000 and back in three steps) is
# averaged away by the medians the rules otherwise read. Sampled metrics (the global gradient norm without clipping)
# are not among them: their extremes would be those of the steps a cadence happened to sample.
PEAK_WATCH = frozenset({"loss", "grad_norm_preclip"})
# Per-layer metrics whose first values are kept for good (in RunState.first, under their full name).
FIRST_PREFIXES = ("act_sat/",)


_used: dict[str, bool] = {}


def used(name: str) -> bool:
    hit = _used.get(name)
    if hit is None:
        hit = _used[name] = name in USED or name.startswith(USED_PREFIXES)
        if len(_used) > 100_000:  # names come from the wire: do not let a hostile stream grow this without end
            _used.clear()
    return hit


class RunState:
    """Built from frames by the Diagnoser; read by the rules. Bounded: no metric keeps its whole history."""

    def __init__(self) -> None:
        self.facts: dict[str, Any] = {}
        self.series: dict[str, Series] = {}
        self.first_step: int | None = None
        self.last_step = -1
        # The first finite losses and accuracies, kept for good: the start of the curve the run is judged against.
        self.first: dict[str, list[tuple[int, float]]] = {"loss": [], "acc": [], "grad_norm": [], "grad_norm_preclip": [],
                                                       "update_ratio": []}
        # First step at which a metric was non-finite (NaN or Inf), by metric name.
        self.first_nonfinite: dict[str, int] = {}
        self.target_hist: np.ndarray | None = None  # class counts of the training targets, all frames so far
        self.pred_hist: np.ndarray | None = None
        self.ended: str | None = None
        self.end_total_steps: int | None = None
        self.active: dict[str, set[str | None]] = {}  # alert ids active after the last evaluation → causes
        self._epoch_first: dict[int, int] = {}  # epoch → first step seen in it
        self._layer_rank: dict[str, int] = {}
        self._layers_of: dict[str, tuple[int, list[str]]] = {}
        self.memo: dict[object, object] = {}  # per evaluation: summaries several rules ask for
        self.facts_version = 0
        # PEAK_WATCH metrics: (largest finite value, its step) since the last evaluation, and the largest ever.
        self.peaks: dict[str, tuple[float, int]] = {}
        self.peak_top: dict[str, tuple[float, int]] = {}

    # -- intake ----------------------------------------------------------------------------------------
    def merge_facts(self, facts: dict[str, Any]) -> None:
        self.facts.update(facts)
        self.facts_version += 1
        model = facts.get("model")
        if isinstance(model, dict) and isinstance(model.get("layers"), list):
            self._layer_rank = {str(layer.get("name")): i for i, layer in enumerate(model["layers"])
                                if isinstance(layer, dict)}
            self._layers_of.clear()

    def ingest(self, steps: list[int], cols: dict[str, list], hists: dict[str, list] | None) -> None:
        """Take a whole steps frame in at once."""
        self.prepare(steps, cols, hists).upto(steps[-1] if steps else -1)

    def prepare(self, steps: list[int], cols: dict[str, list], hists: dict[str, list] | None) -> Intake:
        """Sort a steps frame into per-metric (steps, values) lists, once; `Intake.upto(step)` then appends it
        in as many parts as there are evaluation points in it."""
        intake = Intake()
        n = len(steps)
        if not n:
            return intake
        if self.first_step is None:
            self.first_step = steps[0]
        pattern: tuple[int, Any, list[int]] | None = None  # (gaps, getter of the present rows, their steps)
        for name, col in cols.items():
            if not isinstance(col, list) or len(col) != n or not used(name):
                continue
            missing = col.count(None)
            if missing == n:
                continue  # not measured in this frame
            if not missing:
                vals, at = col, steps
            else:
                # Columns sampled at the same steps share where their gaps are: find it once per frame.
                if pattern is None or pattern[0] != missing or None in pattern[1](col):
                    rows = [i for i, v in enumerate(col) if v is not None]
                    getter = operator.itemgetter(*rows) if len(rows) > 1 else (lambda c, r=rows[0]: (c[r],))
                    pattern = (missing, getter, [steps[i] for i in rows])
                vals, at = list(pattern[1](col)), pattern[2]
            if not set(map(type, vals)) <= NUMBERS:
                continue  # not numbers (bools are refused too, as wire.decode does)
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = Series(LONG_SERIES.get(name, SERIES_CAP))
                self._layers_of.clear()
            intake.parts.append([series, at, vals, 0, name if name in PEAK_WATCH else None])
            if name in NONFINITE_WATCH and name not in self.first_nonfinite:
                for s, v in zip(at, vals):
                    if not math.isfinite(v):
                        self.first_nonfinite[name] = s
                        break
            if name.startswith(FIRST_PREFIXES) and series.total == 0:
                self.first.setdefault(name, [])  # a layer's first samples: what its initialisation gave it
            if name in self.first and len(self.first[name]) < START_STEPS:
                firsts = self.first[name]
                for s, v in zip(at, vals):
                    if math.isfinite(v) and len(firsts) < START_STEPS:
                        firsts.append((s, float(v)))
            if name == "epoch" and 1 not in self._epoch_first:
                for s, e in zip(at, vals):
                    if math.isfinite(e):
                        self._epoch_first.setdefault(int(e), s)
        if hists:
            self.target_hist = _add(self.target_hist, hists.get("target"))
            self.pred_hist = _add(self.pred_hist, hists.get("pred"))
        intake.state = self
        return intake

    # -- reading ---------------------------------------------------------------------------------------
    def col(self, name: str) -> Series | None:
        return self.series.get(name)

    def layers(self, prefix: str) -> list[tuple[str, Series]]:
        """Per-layer series `prefix/<layer>`, in the model's layer order (input side first)."""
        key = prefix + "/"
        cached = self._layers_of.get(prefix)
        if cached is None or cached[0] != len(self.series):
            names = [name[len(key):] for name in self.series if name.startswith(key)]
            order = {name: i for i, name in enumerate(names)}  # first appearance breaks ties: module order
            names.sort(key=lambda n: (self._layer_rank.get(n, len(self._layer_rank) + order[n])))
            cached = self._layers_of[prefix] = (len(self.series), names)
        return [(n, self.series[key + n]) for n in cached[1]]

    def recent(self, name: str, now: int, k: int = 5) -> tuple[float, int, int] | None:
        """(median of the last `k` finite measurements at or before `now`, step of the newest, how many), or None.

        Sparse metrics (per-layer statistics) change only when sampled: the answer is cached until they do.
        """
        s = self.series.get(name)
        return None if s is None or s.n == 0 else s.recent(now, k)

    def layer_recent(self, prefix: str, now: int, k: int = 5) -> dict[str, tuple[float, int, int]]:
        """`recent` for every layer of `prefix/<layer>`, input side first; layers with no finite sample left out."""
        memo_key = ("layers", prefix, now, k)
        hit = self.memo.get(memo_key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out = {}
        for layer, series in self.layers(prefix):
            r = series.recent(now, k) if series.n else None
            if r is not None:
                out[layer] = r
        self.memo[memo_key] = out
        return out

    def seen(self, now: int) -> int:
        """Training steps seen up to `now`."""
        return 0 if self.first_step is None else max(0, now - self.first_step + 1)

    @property
    def loss(self) -> dict[str, Any]:
        loss = self.facts.get("loss")
        return loss if isinstance(loss, dict) else {}

    @property
    def model(self) -> dict[str, Any]:
        model = self.facts.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def optimizers(self) -> list[dict[str, Any]]:
        opts = self.facts.get("optimizer")
        return [o for o in opts if isinstance(o, dict)] if isinstance(opts, list) else []

    def fact(self, *path: str) -> Any:
        """A nested fact, or None: fact("targets", "max")."""
        node: Any = self.facts
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    @property
    def num_classes(self) -> int | None:
        k = self.facts.get("num_classes")
        return k if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else None

    @property
    def task(self) -> str | None:
        task = self.facts.get("task")
        return task if isinstance(task, str) else None

    @property
    def epoch_steps(self) -> int | None:
        k = self.facts.get("epoch_steps")
        if isinstance(k, int) and not isinstance(k, bool) and k > 0:
            return k
        if 0 in self._epoch_first and 1 in self._epoch_first:
            return max(1, self._epoch_first[1] - self._epoch_first[0])
        return None

    def class_shares(self) -> np.ndarray | None:
        """Share of each class among the training targets seen, for single-label tasks."""
        if self.task not in ("binary", "multiclass") or self.target_hist is None:
            return None
        total = self.target_hist.sum()
        return self.target_hist / total if total > 0 else None

    def hist_samples(self) -> float:
        return float(self.target_hist.sum()) if self.target_hist is not None else 0.0

    def phase_at(self, now: int) -> tuple[int, str | None]:
        """(first step, why) of the phase of training that `now` is in: a new optimizer, a new data source
        (the `phases` fact) start a new one. (0, None) for the first phase."""
        phases = self.facts.get("phases")
        out: tuple[int, str | None] = (0, None)
        if isinstance(phases, list):
            for p in phases:
                if isinstance(p, dict) and isinstance(p.get("start"), int) and 0 < p["start"] <= now:
                    if p["start"] > out[0]:
                        out = (p["start"], str(p.get("why")))
        return out

    def note_peak(self, name: str, steps: list[int], vals: list[float]) -> None:
        """Values of a PEAK_WATCH metric going in: its largest since the last evaluation, and ever."""
        best: tuple[float, int] | None = None
        for s, v in zip(steps, vals):
            if math.isfinite(v) and (best is None or v > best[0]):
                best = (float(v), s)
        if best is None:
            return
        old = self.peaks.get(name)
        if old is None or best[0] > old[0]:
            self.peaks[name] = best
        top = self.peak_top.get(name)
        if top is None or best[0] > top[0]:
            self.peak_top[name] = best

    def looked(self) -> None:
        """The rules have looked at the run: the next peaks are those since this look."""
        if self.peaks:
            self.peaks = {}

    def is_active(self, alert_id: str, cause: str | None = None) -> bool:
        causes = self.active.get(alert_id)
        return bool(causes) and (cause is None or cause in (causes or ()))

    @property
    def explained_by_lr(self) -> bool:
        """A learning rate too high for the model is diverging it: dead units and huge gradients are what it does,
        and lowering the rate is the fix to try first. Layer rules hold their verdicts meanwhile."""
        return self.is_active("lr_too_high")

    @property
    def broken(self) -> bool:
        """The loss or the gradients went NaN/Inf: the weights are likely ruined and statistics taken since say
        nothing new. Rules that read them hold their verdicts (raise nothing, clear nothing) until it passes."""
        return bool(self.active.get("nan_loss", set()) & {"loss", "grads"})


class Intake:
    """A prepared steps frame: per metric, the measured steps and values still to append."""

    __slots__ = ("parts", "state")

    def __init__(self) -> None:
        self.parts: list[list[Any]] = []  # [series, steps, values, how many appended]
        self.state: RunState | None = None

    def upto(self, step: int) -> None:
        """Append every measurement at or before `step`."""
        for part in self.parts:
            series, at, vals, done, peak = part
            if done == len(at):
                continue
            end = len(at) if at[-1] <= step else bisect_right(at, step)
            if end > done:
                series.extend(at[done:end], vals[done:end])
                part[3] = end
                if peak is not None and self.state is not None:
                    self.state.note_peak(peak, at[done:end], vals[done:end])
        if self.state is not None:
            self.state.last_step = max(self.state.last_step, step)


def _add(acc: np.ndarray | None, counts: Any) -> np.ndarray | None:
    if not isinstance(counts, list) or not counts:
        return acc
    new = np.asarray([c if isinstance(c, (int, float)) and math.isfinite(c) else 0.0 for c in counts], dtype=np.float64)
    if acc is None:
        return new
    if len(new) > len(acc):
        acc = np.pad(acc, (0, len(new) - len(acc)))
    acc[:len(new)] += new
    return acc
