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

# 1%: the issue's tightest target is a small CNN at ≤ 1.02 × plain; half of that is left for the hooks'
# own dispatch and the flush.
DEFAULT_BUDGET = 0.01
# The first steps show the most (facts, the early shape of every curve): take everything.
WARMUP_STEPS = 8
# However expensive, every statistic is taken at least this often.
MAX_EVERY = 256
# Smoothing of the cost estimates: about the last 20 samples.
EMA = 0.1
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
        self._seen = {"grads": 0, "deep": 0}

    def plan(self, step: int) -> tuple[bool, bool]:
        """(grads, deep) for `step`."""
        if step < WARMUP_STEPS and self.fixed is None:
            return True, True
        deep = step % self.every["deep"] == 0
        return deep or step % self.every["grads"] == 0, deep

    def observe(self, step_time: float | None, base: float, tiers: dict[str, float], sampled: tuple[bool, bool]) -> None:
        """What the step that just ended cost: its wall time, the probe's base time, each sampled tier's time."""
        self.base = _ema(self.base, base, self._seen["grads"] + self._seen["deep"] == 0)
        for tier, was in zip(("grads", "deep"), sampled):
            if was:
                self.cost[tier] = _ema(self.cost[tier], tiers.get(tier, 0.0), self._seen[tier] == 0)
                self._seen[tier] += 1
        if step_time is not None and step_time > 0:
            self.step_time = _ema(self.step_time, step_time, self.step_time == 0.0)
        if self.fixed is None and self.step_time > 0:
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


def _ema(old: float, new: float, first: bool) -> float:
    return new if first else old + EMA * (new - old)
