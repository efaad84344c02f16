"""What the PyTorch probe adds to a training step, counted in instructions (valgrind's callgrind), not time.

    python bench/probe_instructions.py [--model cnn] [--steps 40]

Step-time ratios on a shared 2-core machine wander by ±5 % from run to run (bench/probe_overhead.py, BENCHMARKS.md),
more than the probe's share of a CNN step. Instructions retired do not depend on the load of the machine, so
this is the figure to trust for "how much work does the probe do", while probe_overhead.py stays the figure
for what a user sees. It leaves out what instructions cannot see: cache misses and page faults.

Both loops (plain, and accmon with its I/O thread, recording and rules) run in their own process under
callgrind, side by side. Each warms up uninstrumented, then counts exactly `--steps` steps, every thread of
the process included. So that the count is deterministic:
- one intra-op thread (OMP_NUM_THREADS=1): OpenMP workers spin while they wait, and spinning is instructions;
- the per-layer tiers are off (ACCMON_EVERY): the adaptive cadence reads wall time, which valgrind stretches
  ~50×. The tiers' cost is the cadence's budget, measured by its own timers; this counts the every-step work;
- flushes come every FLUSH_EVERY steps, as a 20-ms step with the probe's 0.5 s flush period gets them, rather
  than by the stretched wall clock.
The I/O thread's timed work (heartbeats, idle polls) still runs on the stretched clock, ~50× more often per step
than in a real run: the figure errs high.

Needs valgrind (`apt install valgrind`); takes ~20 minutes, mostly importing torch under valgrind.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_overhead import MODELS, Accmon, Loop  # noqa: E402

WARMUP_STEPS = 20
FLUSH_EVERY = 25  # FLUSH_S (0.5 s) over a 20-ms CNN step


def child(mode: str, model: str, steps: int, flag: str) -> None:
    """Runs under callgrind: warm up, say READY, count `steps` steps while the parent has instrumentation on."""
    loop = Loop(model)
    acc = Accmon(tempfile.mkdtemp(), model) if mode == "accmon" else None
    if acc is not None:
        acc.probe.flush_s = float("inf")  # flushed by step count below
        acc.begin()

    def step(i: int) -> None:
        loop.step()
        if acc is not None and i % FLUSH_EVERY == FLUSH_EVERY - 1:
            acc.probe.flush()

    for i in range(WARMUP_STEPS):
        step(i)
    print("READY", flush=True)
    while not os.path.exists(flag):
        time.sleep(0.1)
    for i in range(steps):
        step(i)
    print("DONE", flush=True)
    while os.path.exists(flag):  # stay alive, idle, until the parent has switched counting off
        time.sleep(0.1)
    if acc is not None:
        acc.end()
        acc.close()


def _wait_for(proc: subprocess.Popen, out: str, word: str) -> None:
    while True:
        with open(out) as f:
            if word in f.read():
                return
        if proc.poll() is not None:
            with open(out) as f:
                raise SystemExit(f"the {word} never came; valgrind's output:\n{f.read()[-3000:]}")
        time.sleep(1)


def _totals(prefix: str) -> int:
    """Instructions of the dump made while counting: callgrind writes it as `prefix.1`."""
    for path in sorted(glob.glob(prefix + ".*")):
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    n = int(line.split()[1])
                    if n:
                        return n
    raise SystemExit(f"no counted dump found next to {prefix}")


def measure(model: str, steps: int, workdir: str) -> dict[str, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCMON_EVERY="1000000000")
    runs = {}
    for mode in ("plain", "accmon"):
        out = os.path.join(workdir, f"{mode}.out")
        flag = os.path.join(workdir, f"{mode}.go")
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={os.path.join(workdir, 'cg.' + mode)}",
               sys.executable, os.path.abspath(__file__), "--child", mode, "--model", model,
               "--steps", str(steps), "--flag", flag]
        with open(out, "w") as f:
            runs[mode] = (subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), out, flag)
    counts = {}
    for proc, out, flag in runs.values():
        _wait_for(proc, out, "READY")
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        open(flag, "w").close()
    for mode, (proc, out, flag) in runs.items():
        _wait_for(proc, out, "DONE")
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        os.remove(flag)
        if proc.wait() != 0:
            raise SystemExit(f"the {mode} loop failed under valgrind; see {out}")
        counts[mode] = _totals(os.path.join(workdir, "cg." + mode))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn", choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, default=40, help="steps counted per loop (default 40)")
    ap.add_argument("--child", choices=("plain", "accmon"), help=argparse.SUPPRESS)
    ap.add_argument("--flag", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.steps, args.flag)
        return 0
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: this bench counts instructions with valgrind's callgrind", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as workdir:
        counts = measure(args.model, args.steps, workdir)
    plain, probed = counts["plain"] / args.steps, counts["accmon"] / args.steps
    print(f"{args.model}: instructions per step over {args.steps} steps (one intra-op thread, tiers off, "
          f"a flush every {FLUSH_EVERY} steps)")
    print(f"plain   {plain / 1e6:10.2f} M")
    print(f"accmon  {probed / 1e6:10.2f} M   ratio {probed / plain:.4f}   added {(probed - plain) / 1e6:.2f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
