"""How often the probe takes its more expensive statistics, so that it stays inside its share of step time.

Loss, accuracy, learning rate and step time are taken every step. Two tiers are sampled:

- `grads`: per-layer gradient norms (one foreach kernel over every gradient);
- `deep`: weight norms and update ratios (a copy of the weights across the step), activations, inputs,
  class histograms, NaN/Inf counts.

Each tier's cost is measured where it is spent (host time around its work, `time.perf_counter`), and its
interval is the smallest power of two that keeps (base + tiers) under `budget` × step time. Powers of two
keep the tiers aligned: every deep step is also a grads step, which the update ratio needs.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

# 1%, half the tightest cost target (a small CNN at ≤ 1.02 × plain). The timers see the probe's own work,
# not the dispatch into its hooks or what its Python does to the caches of torch's: measured against a plain
# loop (bench/probe_overhead.py) the whole cost is about twice what they see.
DEFAULT_BUDGET = 0.01
# The first steps show the most (facts, the early shape of every curve): take everything, and then at every
# power of two (see Cadence.plan).
WARMUP_STEPS = 8
# However expensive, every statistic is taken at least this often.
MAX_EVERY = 256
# Smoothing of the per-step estimates (base cost, step time): about the last 20 steps.
EMA = 0.1
# A tier's cost is the median of its last samples: one sampled step that met a GC pause or a busy
# machine must not silence a tier for hundreds of steps.
COST_SAMPLES = 9
# Of what the budget leaves after the every-step base cost, the share each tier may spend.
SHARES = {"grads": 0.4, "deep": 0.6}


class Cadence:
    """Decides, step by step, which tiers to sample."""

    def __init__(self, budget: float = DEFAULT_BUDGET, every: int | None = None) -> None:
        if not (0 < budget < 1):
            raise ValueError(f"budget is a fraction of step time, 0 < budget < 1; got {budget!r}")
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of steps; got {every!r}")
        self.budget = budget
        self.fixed = every
        self.every = {"grads": every or 1, "deep": every or 1}
        self.cost = {"grads": 0.0, "deep": 0.0}  # seconds per sampled step
        self.base = 0.0  # probe seconds per step outside the tiers
        self.step_time = 0.0  # wall seconds per step, probe included
        self._samples: dict[str, deque[float]] = {t: deque(maxlen=COST_SAMPLES) for t in self.cost}
        self._steps = 0

    def plan(self, step: int) -> tuple[bool, bool]:
        """(grads, deep) for `step`."""
        if self.fixed is None and (step < WARMUP_STEPS or step & (step - 1) == 0):
            # Every power of two as well: the rules get per-layer evidence at 16, 32, 64... steps, before a
            # slow cadence's first interval ends, for log2(steps) extra samples in a whole run.
            return True, True
        deep = step % self.every["deep"] == 0
        return deep or step % self.every["grads"] == 0, deep

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
        if self.fixed is None and self.step_time > 0 and (self._steps & 15 == 0 or self._steps <= WARMUP_STEPS + 1):
            self._retune()

    def _retune(self) -> None:
        probe = self.base + sum(self.cost[t] / self.every[t] for t in self.cost)
        train = max(self.step_time - probe, 1e-9)
        spare = max(self.budget * train - self.base, 1e-9)
        for tier, share in SHARES.items():
            need = self.cost[tier] / (share * spare)
            self.every[tier] = min(MAX_EVERY, 1 << max(0, math.ceil(math.log2(max(need, 1.0)))))
        # deep steps must be grads steps: keep deep's interval a multiple of grads'.
        self.every["deep"] = max(self.every["deep"], self.every["grads"])

    def overhead(self) -> float:
        """Estimated probe time per step as a fraction of the training time it is added to."""
        probe = self.base + sum(self.cost[t] / self.every[t] for t in self.cost)
        train = self.step_time - probe
        return probe / train if train > 0 else 0.0
