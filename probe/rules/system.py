"""input_bound, throughput_drop, memory_growth and near_oom: where a step's time goes and whether the run will
survive the night, from the step timings and the memory figures the probe joins to steps (probe/system.py).

Timing depends on the machine, so the two timing alerts are `info`: they never fail `accmon check`, and they
need a sustained pattern over many steps and seconds, never one slow batch (a loader's warm-up, a validation
pass, a checkpoint). The memory alerts are warnings: they announce a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .base import Finding, Rule, ended, num
from .health import Health
from .series import array_median
from .state import RunState
from .thresholds import (
    INPUT_BOUND_FRACTION,
    INPUT_BOUND_MIN_SECONDS,
    INPUT_BOUND_MIN_WAIT_S,
    INPUT_BOUND_STEPS,
    MEMORY_GROWTH_MIN_BYTES,
    MEMORY_GROWTH_MIN_FRACTION,
    MEMORY_GROWTH_MIN_SAMPLES,
    MEMORY_GROWTH_MIN_STEPS,
    MEMORY_GROWTH_WINDOW,
    NEAR_OOM_FRACTION,
    SYSTEM_WARMUP_STEPS,
    THROUGHPUT_DROP_FACTOR,
    THROUGHPUT_MIN_SECONDS,
    THROUGHPUT_NORM_STEPS,
    THROUGHPUT_RECENT_STEPS,
)

MB = 1024 * 1024
# These rules look at every 32nd step only (points are multiples of 8 to 256; from step 4,096 on every point is
# one): their windows span hundreds of steps, and looking at each point cost the rules three times their budget.
MACHINE_EVERY = 32


def _looks(st: RunState, now: int) -> bool:
    """Every MACHINE_EVERY-th step, and at the run's end: a run of 128 steps ends at step 127, and its window
    past the warm-up was never looked at."""
    return now % MACHINE_EVERY == 0 or st.ended is not None


def _mb(x: float) -> str:
    return f"{x / MB:,.0f} MB" if x < 10 * 1024 * MB else f"{x / (1024 * MB):,.1f} GB"


class InputBound(Rule):
    ids = ("input_bound",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        waits, times = st.col("data_wait"), st.col("step_time")
        if waits is None or times is None or not _looks(st, h.now) or waits.total < INPUT_BOUND_STEPS:
            return []
        w_steps, w = waits.last(h.now, INPUT_BOUND_STEPS)
        t_steps, t = times.last(h.now, 4 * INPUT_BOUND_STEPS)
        if len(w) < INPUT_BOUND_STEPS or w_steps[0] < SYSTEM_WARMUP_STEPS:
            return []
        # Pair each wait with its own step's time: both columns come from the same steps, but either can lack one.
        idx = np.searchsorted(t_steps, w_steps)
        ok = (idx < len(t_steps)) & (t_steps[np.minimum(idx, len(t_steps) - 1)] == w_steps)
        w, t = w[ok], t[idx[ok]]
        good = np.isfinite(w) & np.isfinite(t) & (t > 0)
        w, t = w[good], t[good]
        if len(w) < INPUT_BOUND_STEPS // 2 or float(t.sum()) < INPUT_BOUND_MIN_SECONDS:
            return []
        share = array_median(np.minimum(w / t, 1.0))  # most steps, not one long wait, must be spent waiting
        wait = array_median(w)
        step = array_median(t)
        if share >= INPUT_BOUND_FRACTION and wait >= INPUT_BOUND_MIN_WAIT_S:
            loader = st.facts.get("batch_size") is not None or "shuffled" in st.facts
            where = "in DataLoader.__next__" if loader else "between the optimizer step and the next forward pass"
            return [Finding(
                "input_bound", True, None, "info",
                f"training waits for data: {share:.0%} of a typical step ({wait * 1000:.0f} of {step * 1000:.0f} ms) "
                f"is spent {where}; the model computes for the rest",
                {"median_wait_s": num(wait), "median_step_s": num(step), "wait_share": num(share, 3),
                 "steps": len(w), "threshold": INPUT_BOUND_FRACTION},
                "feed it faster: DataLoader(num_workers=4 or more, pin_memory=True, persistent_workers=True, "
                "prefetch_factor=4); decode and augment on the workers, not in the loop; keep small datasets as "
                "tensors in memory (on the GPU if they fit)",
                score=share)]
        if share < INPUT_BOUND_FRACTION * 0.8:
            return [ended("input_bound")]
        return []


class ThroughputDrop(Rule):
    ids = ("throughput_drop",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        times = st.col("step_time")
        if times is None or not _looks(st, h.now) or times.total < THROUGHPUT_NORM_STEPS // 2 + THROUGHPUT_RECENT_STEPS:
            return []
        steps, t = times.last(h.now, THROUGHPUT_NORM_STEPS + THROUGHPUT_RECENT_STEPS)
        keep = (steps >= SYSTEM_WARMUP_STEPS) & np.isfinite(t) & (t > 0)
        steps, t = steps[keep], t[keep]
        if len(t) < THROUGHPUT_NORM_STEPS // 2 + THROUGHPUT_RECENT_STEPS:
            return []
        recent, before = t[-THROUGHPUT_RECENT_STEPS:], t[:-THROUGHPUT_RECENT_STEPS]
        norm, now = array_median(before), array_median(recent)
        if float(before.sum()) < 2 * THROUGHPUT_MIN_SECONDS or float(recent.sum()) < THROUGHPUT_MIN_SECONDS:
            return []  # short runs: a busy minute on a shared machine is not a trend
        slower = now / norm if norm > 0 else 0.0
        if slower >= THROUGHPUT_DROP_FACTOR:
            since = int(steps[-THROUGHPUT_RECENT_STEPS])
            return [Finding(
                "throughput_drop", True, None, "info",
                f"training slowed down: {1 / now:.3g} steps/s over the last {len(recent)} steps against "
                f"{1 / norm:.3g} before ({slower:.1f}× slower per step)",
                {"median_step_s": num(now), "norm_step_s": num(norm), "slower": num(slower, 3),
                 "recent_steps": len(recent), "norm_steps": len(before), "threshold": THROUGHPUT_DROP_FACTOR},
                "look at the machine: a GPU that throttles (temperature, power: the System tab), another job on "
                "the same GPU or CPU, swapping (memory), a slow rank holding the others back; or at the run: "
                "a longer sequence length, evaluation or checkpointing inside the step",
                since=since, score=slower)]
        if slower < THROUGHPUT_DROP_FACTOR * 0.75:
            return [ended("throughput_drop")]
        return []


class MemoryGrowth(Rule):
    ids = ("memory_growth",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        out: list[Finding] = []
        if not _looks(st, h.now):
            return out
        for cause, series in [("host", st.col("rss")), *((f"cuda:{name}", s) for name, s in st.layers("cuda_allocated"))]:
            if series is None:
                continue
            found = self._growth(st, h, cause, series)
            if found is not None:
                out.append(found)
        return out

    def _growth(self, st: RunState, h: Health, cause: str, series: Any) -> Finding | None:
        oldest, newest = series.ends(h.now, MEMORY_GROWTH_WINDOW)
        if oldest is None or not newest - oldest >= MEMORY_GROWTH_MIN_BYTES / 2:
            # Flat or falling across the window (the common case), or too few samples: no arrays needed.
            return ended("memory_growth", cause) if oldest is not None and cause in st.active.get("memory_growth", ()) else None
        steps, v = series.last(h.now, MEMORY_GROWTH_WINDOW)
        keep = (steps >= _settled(st)) & np.isfinite(v)
        steps, v = steps[keep], v[keep]
        if len(v) < MEMORY_GROWTH_MIN_SAMPLES or int(steps[-1] - steps[0]) < MEMORY_GROWTH_MIN_STEPS:
            return None
        # Steady: each quarter of the window sits higher than the one before. A rise that happened once (a cache
        # filled, the allocator's pools grown) leaves flat quarters behind it and is not growth.
        quarters = [array_median(q) for q in np.array_split(v, 4)]
        rises = [b - a for a, b in zip(quarters, quarters[1:])]
        grown = quarters[-1] - quarters[0]
        steady = all(r > 0.1 * grown for r in rises) if grown > 0 else False
        per_step = grown / max(float(np.median(steps[-len(v) // 4:]) - np.median(steps[:len(v) // 4])), 1.0)
        big = grown >= MEMORY_GROWTH_MIN_BYTES and grown >= MEMORY_GROWTH_MIN_FRACTION * quarters[0]
        if steady and big:
            what = "the training process's memory (RSS)" if cause == "host" else f"GPU {cause[5:]} allocated memory"
            return Finding(
                "memory_growth", True, cause, "warning",
                f"{what} grows step after step: {_mb(quarters[0])} → {_mb(quarters[-1])} over steps "
                f"{int(steps[0])}–{int(steps[-1])}, about {_mb(per_step * 1000)} per 1,000 steps; it ends in an "
                "out-of-memory crash",
                {"from_bytes": num(quarters[0]), "to_bytes": num(quarters[-1]), "bytes_per_step": num(per_step),
                 "from_step": int(steps[0]), "to_step": int(steps[-1]), "samples": len(v)},
                "something keeps every step's tensors alive. The classic: `running_loss += loss` on a loss that "
                "no backward() frees (a validation or monitoring loss computed with gradients on) keeps its whole "
                "graph and activations: write `running_loss += loss.item()`, and evaluate under torch.no_grad(). "
                "Also: outputs or losses that still require grad appended to a list (detach() them), a cache "
                "keyed by batch, `retain_graph=True`",
                since=int(steps[0]), score=max(grown / max(quarters[0], 1.0), 1e-9))
        if grown <= 0 or not steady:
            return ended("memory_growth", cause)
        return None


class NearOom(Rule):
    ids = ("near_oom",)

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        devices = st.facts.get("devices")
        if not isinstance(devices, dict):
            return []
        out: list[Finding] = []
        for index, reserved in st.layers("cuda_reserved"):
            info = devices.get(index)
            total = info.get("total") if isinstance(info, dict) else None
            if not isinstance(total, (int, float)) or isinstance(total, bool) or total <= 0:
                continue
            r = reserved.recent(h.now, 2)
            if r is None:
                continue
            share = r[0] / total
            cause = f"cuda:{index}"
            if share >= NEAR_OOM_FRACTION:
                peak = st.recent(f"cuda_max_allocated/{index}", h.now, 1)
                peak_words = f"; the peak allocation is {_mb(peak[0])}" if peak is not None else ""
                out.append(Finding(
                    "near_oom", True, cause, "warning",
                    f"GPU {index} is nearly full: {_mb(r[0])} of {_mb(total)} ({share:.0%}) reserved by PyTorch"
                    f"{peak_words}; one longer batch can end the run in CUDA out of memory",
                    {"device": index, "reserved_bytes": num(r[0]), "total_bytes": num(total), "share": num(share, 3),
                     "threshold": NEAR_OOM_FRACTION, "name": info.get("name") if isinstance(info, dict) else None},
                    "leave headroom: a smaller batch with gradient accumulation, mixed precision (torch.autocast), "
                    "activation checkpointing; PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True reduces "
                    "fragmentation; pad to fixed sequence lengths so the peak is known early",
                    score=share))
            elif share < NEAR_OOM_FRACTION - 0.05:
                out.append(ended("near_oom", cause))
        return out


def _settled(st: RunState) -> int:
    """The first step memory is judged from: past the warm-up, and past the first epoch when the run has
    epochs (a dataset cached as it is read grows through the first epoch, then stops)."""
    start = SYSTEM_WARMUP_STEPS
    epoch = st.epoch_steps
    if epoch is not None:
        return max(start, epoch)
    if st.facts.get("shuffled") is not None:
        return max(start, st.last_step + 1)  # a map-style DataLoader whose first epoch has not ended yet: wait
    return start
