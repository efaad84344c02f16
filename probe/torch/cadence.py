"""Which steps the probe takes its more expensive statistics at: a schedule of the step number only.

Loss, accuracy, learning rate and step time are taken every step. Two tiers are sampled:

- `grads`: per-layer gradient norms (one foreach kernel over every gradient);
- `deep`: weight norms and update ratios (a copy of the weights across the step), activations, inputs,
  class histograms, NaN/Inf counts.

Both are taken at the same steps: every step of the first eight, then every `k` steps with `k` growing with
the step count (SCHEDULE): dense while a run is young and short runs need every sample, sparse once it is long.
The schedule depends on nothing else. An earlier cadence chose the interval from the measured step time (a
share of it), so a busy machine, whose steps take longer, sampled other steps than an idle one and could reach
another verdict (issue 15): a diagnosis must not depend on the machine it ran on. `ACCMON_EVERY=N` (or
`every=N`) fixes the interval instead.

What the tiers cost is still measured where it is spent (`time.perf_counter` around their work) and reported by
`overhead()`; it no longer steers anything. Measured on this machine's 2 cores (thread CPU time, BENCHMARKS.md,
issue 15): a sampled step adds ~1.5 ms to a 1.9-ms MLP step and ~2.8 ms to a 22-ms CNN step, so the schedule
adds to the MLP's mean step about 19% below step 64 (a fraction of a second of training), 10% to step 256, 5% to
1,024, 2.4% to 4,096, 1.2% to 16,384, 0.6% to 65,536 and 0.3% beyond (the CNN a sixth of that), and to its median
step, which is not a sampled one, nothing.
"""

from __future__ import annotations

import statistics
from collections import deque

# (first step, interval): from that step on, both tiers every `interval` steps. Powers of two throughout, so a
# sampled step is a multiple of every interval before it, every power of two is sampled (the rules get per-layer
# evidence at 16, 32, 64... steps), and the intervals agree with the rules' evaluation points (docs/rules.md:
# multiples of 8 below step 256, 16 below 1,024, ...), each of which then has a sample at or just before it.
# Up to step 1,024 the interval stays within what the corpus checks verdicts at (every 1, 4 and 16 steps); from
# step 64 on it is the rules' own interval (thresholds.EVAL_EVERY) until it passes it at step 4,096.
SCHEDULE: tuple[tuple[int, int], ...] = (
    (0, 1), (8, 4), (64, 8), (256, 16), (1024, 32), (4096, 64), (16384, 128), (65536, 256))
# The first steps show the most (facts, the early shape of every curve): every one is sampled.
WARMUP_STEPS = SCHEDULE[1][0]
# However long the run, every statistic is taken at least this often.
MAX_EVERY = SCHEDULE[-1][1]
# Kept for callers that pass a budget (install(budget=...), ACCMON_BUDGET): the share of step time the probe's
# sampled statistics were meant to stay under; the schedule no longer reads it.
DEFAULT_BUDGET = 0.01
# Smoothing of the per-step estimates (base cost, step time): about the last 20 steps.
EMA = 0.1
# A tier's cost is the median of its last samples (one sampled step that met a GC pause must not dominate).
COST_SAMPLES = 9


def interval_at(step: int) -> int:
    """The schedule's interval at `step`."""
    k = 1
    for start, every in SCHEDULE:
        if step < start:
            break
        k = every
    return k


class Cadence:
    """Decides, step by step, which tiers to sample (a function of the step number, or a fixed interval)."""

    def __init__(self, budget: float = DEFAULT_BUDGET, every: int | None = None) -> None:
        if not (0 < budget < 1):
            raise ValueError(f"budget is a fraction of step time, 0 < budget < 1; got {budget!r}")
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of steps; got {every!r}")
        self.budget = budget
        self.fixed = every
        self.every = {"grads": every or 1, "deep": every or 1}  # the interval in force (for status and tests)
        self.cost = {"grads": 0.0, "deep": 0.0}  # seconds per sampled step
        self.base = 0.0  # probe seconds per step outside the tiers
        self.step_time = 0.0  # wall seconds per step, probe included (accuracy deferral and slow-step flushes)
        self._samples: dict[str, deque[float]] = {t: deque(maxlen=COST_SAMPLES) for t in self.cost}
        self._steps = 0
        self._span = (0, 0)  # the steps [from, to) over which self.every holds

    def plan(self, step: int) -> tuple[bool, bool]:
        """(grads, deep) for `step`."""
        if self.fixed is not None:
            take = step % self.fixed == 0
            return take, take
        lo, hi = self._span
        if not lo <= step < hi:
            k = interval_at(step)
            self.every = {"grads": k, "deep": k}
            starts = [start for start, _ in SCHEDULE]
            lo = max([s for s in starts if s <= step], default=0)
            hi = min([s for s in starts if s > step], default=1 << 62)
            self._span = (lo, hi)
        take = step % self.every["deep"] == 0
        return take, take

    def observe(self, step_time: float | None, base: float, tiers: dict[str, float], sampled: tuple[bool, bool]) -> None:
        """What the step that just ended cost: its wall time, the probe's base time, each sampled tier's time."""
        self._steps += 1
        if self._steps == 1:
            return  # the first step pays one-time costs (facts, layouts): not what later steps will cost
        self.base = base if self._steps == 2 else self.base + EMA * (base - self.base)
        if sampled[0] or sampled[1]:
            for tier, was in zip(("grads", "deep"), sampled):
                if was:
                    samples = self._samples[tier]
                    samples.append(tiers.get(tier, 0.0))
                    self.cost[tier] = statistics.median(samples)
        if step_time is not None and step_time > 0:
            self.step_time = step_time if self.step_time == 0.0 else self.step_time + EMA * (step_time - self.step_time)

    def overhead(self) -> float:
        """Estimated probe time per step as a fraction of the training time it is added to."""
        probe = self.base + sum(self.cost[t] / self.every[t] for t in self.cost)
        train = self.step_time - probe
        return probe / train if train > 0 else 0.0
