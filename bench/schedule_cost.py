"""What the probe's sampling schedule costs a run's first steps (issue 15 item 6).

Thread CPU time per step (which another process's load hardly changes) of bench/probe_overhead.py's loop: plain,
and probed with the tiers off, every 256 steps, and the default step-number schedule (accmon.probe.torch.cadence);
a fresh probe each run, the configurations interleaved, medians over the rounds.

    .venv/bin/python bench/schedule_cost.py mlp 1200 3     # model, steps, rounds
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from probe_overhead import Loop  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.run import Run  # noqa: E402

CONFIGS: dict[str, int | None | str] = {"plain": "plain", "off": 10**9, "every 256": 256, "schedule": None}


def main(name: str, steps: int, rounds: int) -> None:
    torch.set_num_threads(1)
    res: dict[str, list[float]] = {k: [] for k in CONFIGS}
    for _ in range(rounds):
        for label, every in CONFIGS.items():
            loop = Loop(name)
            run = None
            if every != "plain":
                run = Run("cost", record=os.path.join(tempfile.mkdtemp(), "r.accmon"), rules=False)
                apt.install(run, every=every if isinstance(every, int) else None)
            for _ in range(5):
                loop.step()  # warm-up, not timed (the probe's steps 0-4)
            t0 = time.thread_time()
            for _ in range(steps):
                loop.step()
            res[label].append((time.thread_time() - t0) / steps * 1e3)
            if run is not None:
                apt.uninstall()
                run.close()
    base = statistics.median(res["plain"])
    for label, v in res.items():
        m = statistics.median(v)
        print(f"{name} {label:10s} {m:.3f} ms/step (thread CPU, median of {rounds}) ratio {m / base:.3f}  "
              f"runs {[round(x, 3) for x in v]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
