"""The GPU claims, proven in one short call (issue 20). Run it through `bench/gpu_check.sh`, which sets up a bare
GPU machine (pyzmq from bench/wheels) and puts this checkout on the path as `accmon`.

    bash bench/gpu_check.sh [--quick | --full] [--models cnn,gpt] [--out DIR]
    python bench/gpu_check.py ...            # the same, where accmon and pyzmq are installed (the dev .venv)

What it does, in one go (about 2-3 minutes on one H100; about 20 s in the quick CPU mode):

1. **Sync-free proof.** A ResNet-style CNN and a small GPT-style transformer are trained by this file's
   `--child` mode, an unmodified script (it never imports accmon), under `accmon run --headless --record` (the
   zero-code injection). On CUDA each synchronising call is counted with torch.cuda.set_sync_debug_mode("warn")
   and attributed to its step: a plain control (hooks suspended), then the probed steps with frequent flushes
   (flush interval 0.1 s); then more probed steps under set_sync_debug_mode("error"). Claim: no synchronising
   call on any probed step (flush steps included, which the design allows one, are reported apart), and none
   in the plain loop either (else the proof says nothing). The repo's CUDA test that is skipped on CPU
   (tests/probe/test_torch_nosync.py::test_no_sync_on_cuda_under_sync_debug_mode) runs too.
2. **Cost on a GPU step.** Plain (hooks suspended) and probed blocks interleaved as bench/probe_overhead.py
   does, bf16 autocast, each step timed with CUDA events; per block the mean step time from the first step's
   start event to the last step's end event (flush steps and host stalls included). Claim: the paired ratio
   (median over rounds of probed block / plain block of the same round) <= 1.01, with the added microseconds.
3. **The GPU parts of other issues**, where they exist in this tree: CUDA memory counters and NVML sampling
   (issue 19: looked for as series in the recordings), `accmon run --stop-on` on a GPU run (issue 18). Those
   not present say "not present in this tree" and do not fail the run.
4. `$OUT` (default ./gpu_check_out, or --out): summary.json, gpu_check.log (readable), logs/ (each command's
   output), the recordings. The summary is printed last; the exit code is 1 when a claim fails.

Without a GPU every GPU claim is reported as "skipped: no GPU", and everything else runs: the injection, the
training loops, flushes, recordings read back and `accmon check --json`, the presence checks. Quick sizes are
the default there (`--full` to force the GPU sizes). `--fake-cuda` runs the GPU code paths on CPU with
torch.cuda's few calls faked (host-clock events, no sync modes): a test of this script, not of a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SKIP_NO_GPU = "skipped: no GPU"
NOT_PRESENT = "not present in this tree"
COST_GOAL = 1.01
SYNC_MSG = "called a synchronizing CUDA operation"
# Imported by the launcher and `accmon check` with textual blocked: a GPU node has no textual.
NO_TEXTUAL = "import sys; sys.modules['textual'] = None; from accmon.tui.cli import main; sys.exit(main())"

# Sizes. "full" is for the GPU: batch 128 of 32x32 for the CNN, 256 tokens for the GPT. "quick" only shows that
# every part runs (the CPU mode, and a GPU smoke test).
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "cnn": dict(width=64, batch=128, img=32, plain=50, probed=300, errmode=100, blocks=20, block_steps=50),
        "gpt": dict(d=384, layers=4, heads=6, seq=256, batch=32, vocab=8192,
                    plain=50, probed=300, errmode=100, blocks=20, block_steps=50),
    },
    "quick": {
        "cnn": dict(width=8, batch=16, img=16, plain=4, probed=24, errmode=6, blocks=2, block_steps=6),
        "gpt": dict(d=32, layers=2, heads=2, seq=32, batch=4, vocab=128,
                    plain=4, probed=24, errmode=6, blocks=2, block_steps=6),
    },
}


# ----------------------------------------------------------------------------------------------------------------
# The child: an ordinary training script (no accmon import); `accmon run` injects the probe when it imports torch.
# ----------------------------------------------------------------------------------------------------------------

def build(model_name: str, cfg: dict[str, int], dev: str) -> tuple[Any, Any, list[Any]]:
    """(model, one training step, batches) for the named workload. The step reads no device value."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    # bf16 autocast on the GPU; on CPU it is off: bf16 convolutions there are ~100x slower than float32 ones.
    autocast = dev == "cuda"

    if model_name == "cnn":
        class Block(nn.Module):
            def __init__(self, cin: int, cout: int, stride: int) -> None:
                super().__init__()
                self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.b1 = nn.BatchNorm2d(cout)
                self.r1 = nn.ReLU(inplace=True)
                self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.b2 = nn.BatchNorm2d(cout)
                self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                              if stride != 1 or cin != cout else nn.Identity())
                self.r2 = nn.ReLU(inplace=True)

            def forward(self, x: Any) -> Any:
                return self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))) + self.short(x))

        w = cfg["width"]
        model: nn.Module = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            Block(w, w, 1), Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1),
            Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),
        ).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        loss_fn = nn.CrossEntropyLoss()
        batches = [(torch.randn(cfg["batch"], 3, cfg["img"], cfg["img"], device=dev),
                    torch.randint(0, 10, (cfg["batch"],), device=dev)) for _ in range(8)]

        def step(x: Any, y: Any) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

        return model, step, batches

    class Attention(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x: Any) -> Any:
            b, t, c = x.shape
            q, k, v = self.qkv(x).split(c, dim=2)
            q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(b, t, c))

    class GPTBlock(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = Attention(d, heads)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            self.tok = nn.Embedding(c["vocab"], c["d"])
            self.pos = nn.Embedding(c["seq"], c["d"])
            self.blocks = nn.ModuleList([GPTBlock(c["d"], c["heads"]) for _ in range(c["layers"])])
            self.ln = nn.LayerNorm(c["d"])
            self.head = nn.Linear(c["d"], c["vocab"], bias=False)
            self.register_buffer("positions", torch.arange(c["seq"]), persistent=False)

        def forward(self, idx: Any) -> Any:
            x = self.tok(idx) + self.pos(self.positions)
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x))

    gpt = GPT(cfg).to(dev)
    opt2 = torch.optim.AdamW(gpt.parameters(), lr=3e-4, weight_decay=0.1)
    vocab = cfg["vocab"]
    tokens = [torch.randint(0, vocab, (cfg["batch"], cfg["seq"] + 1), device=dev) for _ in range(8)]
    gpt_batches = [(t[:, :-1].contiguous(), t[:, 1:].contiguous()) for t in tokens]

    def gpt_step(x: Any, y: Any) -> None:
        opt2.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=autocast):
            logits = gpt(x)
            loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        opt2.step()

    return gpt, gpt_step, gpt_batches


class SyncCounter:
    """Counts torch's "called a synchronizing CUDA operation" warnings (sync debug mode "warn"), per step."""

    def __init__(self, probe_dir: str | None) -> None:
        import warnings

        self.probe_dir = probe_dir
        self.where: tuple[str, int] = ("setup", -1)
        self.events: list[tuple[str, int, bool, list[str]]] = []
        self._orig = warnings.showwarning
        warnings.filterwarnings("always", message=".*" + SYNC_MSG)
        warnings.showwarning = self._show

    def _show(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if SYNC_MSG not in str(message):
            self._orig(message, category, filename, lineno, file, line)
            return
        import traceback

        frames = traceback.extract_stack(limit=30)[:-2]
        by_probe = any(self._in_probe(f.filename) for f in frames)
        short = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames[-8:]]
        self.events.append((self.where[0], self.where[1], by_probe, short))

    def _in_probe(self, filename: str) -> bool:
        return bool(self.probe_dir) and os.path.realpath(filename).startswith(self.probe_dir)  # type: ignore[arg-type]

    def count(self, phase: str) -> int:
        return sum(1 for e in self.events if e[0] == phase)


class FakeCuda:
    """--fake-cuda: torch.cuda's calls that the CUDA paths of this script make, on CPU (events on the host clock,
    no sync modes; one sync warning faked on the first plain step). It runs those paths end to end without a
    GPU, so that a mistake in them costs a test here rather than the one GPU call; it proves nothing about a
    GPU (the summary says "fake")."""

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.t = 0.0

        def record(self) -> None:
            self.t = time.perf_counter()

        def elapsed_time(self, end: FakeCuda.Event) -> float:
            return (end.t - self.t) * 1e3

    def synchronize(self) -> None: ...

    def set_sync_debug_mode(self, mode: int | str) -> None: ...

    def max_memory_allocated(self) -> int:
        return 0

    def get_device_name(self) -> str:
        return "fake CUDA (CPU, --fake-cuda)"

    def get_device_capability(self) -> tuple[int, int]:
        return (0, 0)

    def is_bf16_supported(self) -> bool:
        return False


def _fake_sync_of_the_loop() -> None:
    """--fake-cuda: one sync "by torch" on the first plain step, as a loop that synchronises by itself makes:
    so the fake run takes the paths that judge probed steps against the plain loop's own syncs."""
    import warnings

    warnings.warn(f"{SYNC_MSG} (faked by --fake-cuda)", UserWarning, stacklevel=2)


def analyse_syncs(events: list[tuple[str, int, bool, list[str]]], n_plain: int, n_probed: int,
                  flush_steps: list[int]) -> dict[str, Any]:
    """Per-step sync counts of the plain control and the probed steps (SyncCounter.events), and what exceeds
    the plain loop's own: a probed step other than a flush step may synchronise no more than the plain loop
    did on its worst step (torch's own syncs, normally none), and never from probe code."""
    flushset = set(flush_steps)
    per_plain = [0] * n_plain
    per_probed = [0] * n_probed
    for phase, i, _, _ in events:
        if phase == "plain":
            per_plain[i] += 1
        elif phase == "probed":
            per_probed[i] += 1
    plain_max = max(per_plain, default=0)
    over = [i for i, n in enumerate(per_probed) if i not in flushset and n > plain_max]
    by_probe = sorted({i for phase, i, p, _ in events if phase == "probed" and p and i not in flushset})
    return {
        "plain_syncs": sum(per_plain), "plain_max_per_step": plain_max,
        "probed_syncs_on_flush_steps": sum(per_probed[i] for i in flushset if i < n_probed),
        "probed_syncs_on_other_steps": sum(n for i, n in enumerate(per_probed) if i not in flushset),
        "steps_over_plain": len(over), "steps_with_probe_frame_syncs": len(by_probe),
        "syncs_from_probe_code": sum(1 for e in events if e[2]),
        "syncs_at_setup": sum(1 for e in events if e[0] == "setup"),
        "offenders": [{"phase": e[0], "step": e[1], "probe_frame": e[2], "stack": e[3]}
                      for e in events if e[0] == "probed" and e[1] not in flushset][:5]
        + [{"phase": e[0], "step": e[1], "probe_frame": e[2], "stack": e[3]} for e in events if e[0] == "plain"][:3],
    }


def child(args: argparse.Namespace) -> int:
    import torch

    dev = "cuda" if args.device == "cuda" else "cpu"
    if dev == "cpu":
        torch.set_num_threads(1)  # tiny CPU steps: more threads only contend (on a shared 2-core machine, badly)
    cfg = SIZES[args.size][args.child]
    # Put there by the injection, not imported by this script (Any: the harness only reads and toggles them).
    apt: Any = sys.modules.get("accmon.probe.torch")
    hooks: Any = sys.modules.get("accmon.probe.torch.hooks")
    probe = hooks.active() if hooks is not None else None
    res: dict[str, Any] = {"model": args.child, "device": dev, "size": args.size, "cfg": cfg,
                           "injected": probe is not None, "torch": torch.__version__}
    if probe is None or apt is None:
        res["error"] = "the probe was not injected (no accmon.probe.torch hooks active after `import torch`)"
        _write(args.result, res)
        return 3
    probe_dir = os.path.realpath(os.path.dirname(apt.__file__))
    model, step, batches = build(args.child, cfg, dev)
    res["params"] = sum(p.numel() for p in model.parameters())
    cuda = dev == "cuda" or args.fake_cuda
    tc: Any = FakeCuda() if args.fake_cuda else torch.cuda
    nb = len(batches)
    probed_steps = 0

    # 1. Sync-free proof: plain control, probed steps with frequent flushes, then probed under "error".
    counter = SyncCounter(probe_dir) if cuda else None
    if cuda:
        tc.synchronize()
        tc.set_sync_debug_mode("warn")
    hooks.suspend()
    for i in range(cfg["plain"]):
        if counter:
            counter.where = ("plain", i)
        step(*batches[i % nb])
        if args.fake_cuda and i == 0:
            _fake_sync_of_the_loop()
    if counter:
        counter.where = ("between", -1)
    default_flush_s = probe.flush_s
    probe.flush_s = 0.1 if not args.quick_flush else 0.02
    hooks.resume()
    flush_steps: list[int] = []
    for i in range(cfg["probed"]):
        f0 = probe.ledger.flushes
        if counter:
            counter.where = ("probed", i)
        step(*batches[i % nb])
        if probe.ledger.flushes != f0:
            flush_steps.append(i)
    probed_steps += cfg["probed"]
    if counter:
        counter.where = ("between", -1)
    sync: dict[str, Any] = {"plain_steps": cfg["plain"], "probed_steps": cfg["probed"], "flush_s": probe.flush_s,
                            "flush_steps": len(flush_steps)}
    if cuda and counter is not None:
        sync.update(analyse_syncs(counter.events, cfg["plain"], cfg["probed"], flush_steps))
        tc.set_sync_debug_mode(0)
        tc.synchronize()
        err = None
        ran = 0
        if sync["plain_syncs"]:
            err = "not run: the plain loop itself synchronises (torch's own), so mode 'error' would stop it"
        else:
            tc.set_sync_debug_mode("error")
            try:
                for i in range(cfg["errmode"]):
                    step(*batches[i % nb])
                    ran += 1
            except Exception as exc:  # a sync in the loop itself (the probe's own are caught and said on stderr)
                err = f"{type(exc).__name__}: {exc}"
            finally:
                tc.set_sync_debug_mode(0)
        probed_steps += ran
        sync.update(errmode_steps=ran, errmode_error=err)
    else:
        for i in range(cfg["errmode"]):  # the same steps, so that the step counts agree on every device
            step(*batches[i % nb])
        probed_steps += cfg["errmode"]
    res["sync"] = sync
    probe.flush_s = default_flush_s

    # 2. Cost: plain and probed blocks interleaved, the order rotated each round; one warm-up block each first.
    times: dict[str, list[list[float]]] = {"plain": [], "accmon": []}
    block_means: dict[str, list[float]] = {"plain": [], "accmon": []}
    bs = cfg["block_steps"]
    k = 0
    for rnd in range(cfg["blocks"] + 1):
        order = ["plain", "accmon"] if rnd % 2 == 0 else ["accmon", "plain"]
        for variant in order:
            if variant == "plain":
                hooks.suspend()
            else:
                hooks.resume()
                probed_steps += bs
            per_step, mean = _timed_block(step, batches, k, bs, tc if cuda else None)
            k += bs
            if rnd > 0:  # round 0 warms both variants up
                times[variant].append(per_step)
                block_means[variant].append(mean)
    hooks.resume()
    res["cost"] = _cost(times, block_means)
    res["probed_steps"] = probed_steps
    res["probe"] = {"steps_seen": probe.step + 1, "flushes": probe.ledger.flushes,
                    "broken": sorted(getattr(probe, "broken", ()) or ()),
                    "stale": getattr(probe.ledger, "stale", None),
                    "cadence_every": dict(getattr(probe.cadence, "every", {}) or {})}
    if cuda:
        res["cuda"] = {"max_memory_allocated": tc.max_memory_allocated(),
                       "device": tc.get_device_name(),
                       "capability": ".".join(map(str, tc.get_device_capability())),
                       "bf16": tc.is_bf16_supported()}
    _write(args.result, res)
    return 0


def _timed_block(step: Any, batches: list[Any], k: int, n: int, tc: Any) -> tuple[list[float], float]:
    """Per-step times (ms) of n steps and the block's mean step time (ms), first start to last end; with CUDA
    events when `tc` (torch.cuda) is given, else on the host clock."""
    nb = len(batches)
    if tc is not None:
        starts = [tc.Event(enable_timing=True) for _ in range(n)]
        ends = [tc.Event(enable_timing=True) for _ in range(n)]
        for j in range(n):
            starts[j].record()
            step(*batches[(k + j) % nb])
            ends[j].record()
        tc.synchronize()
        return [s.elapsed_time(e) for s, e in zip(starts, ends)], starts[0].elapsed_time(ends[-1]) / n
    out = []
    t_first = time.perf_counter()
    for j in range(n):
        t0 = time.perf_counter()
        step(*batches[(k + j) % nb])
        out.append((time.perf_counter() - t0) * 1e3)
    return out, (time.perf_counter() - t_first) * 1e3 / n


def _cost(times: dict[str, list[list[float]]], block_means: dict[str, list[float]]) -> dict[str, Any]:
    pm, am = block_means["plain"], block_means["accmon"]
    p_med = statistics.median(t for b in times["plain"] for t in b)
    a_med = statistics.median(t for b in times["accmon"] for t in b)
    return {
        "rounds": len(pm), "steps_per_block": len(times["plain"][0]) if times["plain"] else 0,
        "plain_mean_ms": statistics.fmean(pm), "accmon_mean_ms": statistics.fmean(am),
        "plain_median_ms": p_med, "accmon_median_ms": a_med,
        "paired_ratio": statistics.median(a / p for a, p in zip(am, pm)),
        "added_us_per_step": statistics.median((a - p) * 1e3 for a, p in zip(am, pm)),
        "median_ratio": a_med / p_med, "added_us_per_step_median": (a_med - p_med) * 1e3,
        "block_means_ms": {"plain": pm, "accmon": am},
    }


def _write(path: str, obj: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


# ----------------------------------------------------------------------------------------------------------------
# The orchestrator.
# ----------------------------------------------------------------------------------------------------------------

class Check:
    def __init__(self, out: str, deadline_s: float) -> None:
        self.out = out
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.log_fh = open(os.path.join(out, "gpu_check.log"), "w")
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline_s
        self.claims: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    def say(self, line: str = "") -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f}s] " if line else ""
        self.log_fh.write(stamp + line + "\n")
        self.log_fh.flush()
        print(stamp + line, file=sys.stderr, flush=True)

    def claim(self, cid: str, status: str, detail: str, **figures: Any) -> None:
        self.claims.append({"id": cid, "status": status, "detail": detail, **figures})
        self.say(f"CLAIM {cid}: {status} — {detail}")

    def check(self, cid: str, ok: bool, detail: str, **figures: Any) -> None:
        self.checks.append({"id": cid, "status": "pass" if ok else "fail", "detail": detail, **figures})
        self.say(f"check {cid}: {'pass' if ok else 'FAIL'} — {detail}")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
        """Run a command, its output to logs/NAME.log; (exit code or None on time-out, the output)."""
        timeout = max(5.0, min(timeout, self.left()))
        path = os.path.join(self.logs, f"{name}.log")
        self.say(f"$ {' '.join(cmd)}   (log: logs/{name}.log, time limit {timeout:.0f}s)")
        with open(path, "wb") as fh:
            # A session of its own: on a time-out the whole group goes (`accmon run` and the training it started).
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
                self.say(f"{name}: still running after {timeout:.0f}s: killed")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with open(path, errors="replace") as fh:
            text = fh.read()
        return rc, text


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        # is_available() counts devices without a CUDA context: this process holds none, so that the training
        # processes get the GPU to themselves (and a GPU in exclusive-process mode works). The device's name and
        # capability come from the first training process (and NVML where it is installed).
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["cuda_runtime"] = torch.version.cuda
            info.update(nvml_info())
    except ImportError as exc:
        info["torch"] = None
        info["cuda"] = False
        info["torch_error"] = str(exc)
    try:
        import zmq

        info["pyzmq"] = zmq.__version__
    except ImportError:
        info["pyzmq"] = None
    try:
        import accmon.probe as ap

        info["accmon_probe"] = os.path.dirname(ap.__file__)
    except ImportError as exc:
        info["accmon_probe"] = None
        info["accmon_error"] = str(exc)
    return info


def nvml_info() -> dict[str, Any]:
    """GPU 0's name, memory and driver from NVML (nvidia-ml-py), if installed; no CUDA context is made."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(h)
            return {"gpu": name.decode() if isinstance(name, bytes) else name,
                    "gpu_memory_gib": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30, 1),
                    "driver": str(pynvml.nvmlSystemGetDriverVersion()), "gpus": pynvml.nvmlDeviceGetCount()}
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or refusing: the training process still says which GPU it used
        return {"nvml_error": repr(exc)}


def read_recording(path: str) -> dict[str, Any]:
    from accmon.probe.recording import RecordingReader

    reader = RecordingReader(path)
    steps: set[int] = set()
    cols: set[str] = set()
    kinds: dict[str, int] = {}
    for frame in reader.frames():
        kinds[frame["kind"]] = kinds.get(frame["kind"], 0) + 1
        if frame["kind"] == "steps":
            steps.update(frame.get("steps", []))
        if isinstance(frame.get("cols"), dict):  # series of any frame kind (a system frame, when there is one)
            cols.update(frame["cols"])
    return {"steps": len(steps), "last_step": max(steps) if steps else None, "columns": sorted(cols),
            "kinds": kinds, "problems": [str(p) for p in reader.problems]}


def probe_source_has(*needles: str) -> list[str]:
    """Files of the probe package that mention any of `needles` (a feature's presence in this tree)."""
    import accmon.probe as ap

    root = os.path.dirname(os.path.realpath(ap.__file__))
    hits = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(dirpath, f)
                with open(p, errors="replace") as fh:
                    text = fh.read()
                if any(n in text for n in needles):
                    hits.append(os.path.relpath(p, root))
    return sorted(hits)


def orchestrate(args: argparse.Namespace) -> int:
    out = os.path.abspath(args.out or os.environ.get("OUT") or "gpu_check_out")
    fresh = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    if fresh and os.path.commonpath([out, REPO]) == REPO:
        with open(os.path.join(out, ".gitignore"), "w") as fh:
            fh.write("*\n")  # output inside the checkout: never committed by accident
    ck = Check(out, args.deadline)
    info = device_info()
    ck.info = info
    gpu = (bool(info.get("cuda")) and args.device != "cpu") or args.fake_cuda
    if args.fake_cuda:
        info["fake_cuda"] = True  # the GPU paths on CPU: a test of this script, no figure about a GPU
    size = "quick" if args.quick or args.fake_cuda or (not gpu and not args.full) else "full"
    label = "FAKE CUDA (--fake-cuda: a test of this script on CPU)" if args.fake_cuda else info.get("gpu") or "no GPU"
    ck.say(f"gpu_check: {label}; torch {info.get('torch')}; python {info['python']}; "
           f"pyzmq {info.get('pyzmq')}; sizes: {size}; out: {out}")
    if info.get("torch") is None or info.get("pyzmq") is None or info.get("accmon_probe") is None:
        missing = [k for k in ("torch", "pyzmq", "accmon_probe") if info.get(k) is None]
        ck.check("environment", False, f"cannot import {', '.join(missing)}: "
                 f"{info.get('torch_error') or info.get('accmon_error') or 'see bench/gpu_check.sh --fetch-wheels'}")
        return finish(ck, gpu, size)
    ck.check("environment", True, f"accmon.probe from {info['accmon_probe']}, pyzmq {info['pyzmq']}")

    runtime = tempfile.mkdtemp(prefix="amgc", dir="/tmp")  # the registry and ipc sockets of these runs only
    env = dict(os.environ)
    env["ACCMON_RUNTIME_DIR"] = runtime
    env.pop("ACCMON_AUTO", None)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        models = [m for m in args.models.split(",") if m]
        results: dict[str, dict[str, Any]] = {}
        for m in models:
            results[m] = part_model(ck, env, m, gpu, size, args)
        if args.no_cuda_test:
            ck.claim("cuda_test/test_no_sync_on_cuda_under_sync_debug_mode", "skipped: --no-cuda-test", "not asked for")
        else:
            cuda_test(ck, env, gpu)
        other_issues(ck, env, gpu, results, "cpu" if args.fake_cuda else "cuda")
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    return finish(ck, gpu, size)


def part_model(ck: Check, env: dict[str, str], m: str, gpu: bool, size: str, args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    rec = os.path.join(ck.out, f"{m}.accmon")
    result = os.path.join(ck.out, f"{m}.child.json")
    for p in (rec, result):
        if os.path.exists(p):
            os.unlink(p)
    cmd = [py, "-c", NO_TEXTUAL, "run", "--headless", "--record", rec, "--name", f"gpu-check-{m}", "--",
           py, os.path.join(HERE, "gpu_check.py"), "--child", m, "--size", size,
           "--device", "cuda" if gpu and not args.fake_cuda else "cpu", "--result", result]
    cmd += (["--quick-flush"] if size == "quick" else []) + (["--fake-cuda"] if args.fake_cuda else [])
    rc, text = ck.run(f"{m}-run", cmd, env, timeout=240 if size == "full" else 120)
    res: dict[str, Any] = {}
    if os.path.exists(result):
        with open(result) as fh:
            res = json.load(fh)
    ok_run = rc == 0 and bool(res) and "error" not in res
    ck.check(f"zero_code_run/{m}", ok_run,
             f"`accmon run --headless --record` of the unmodified {m} script: exit {rc}"
             + (f"; {res['error']}" if res.get("error") else "")
             + (f"; {res.get('params', 0):,} parameters, {res.get('probed_steps')} probed steps" if res else ""))
    if not ok_run:
        for cid in (f"sync_free/{m}", f"cost/{m}"):
            ck.claim(cid, "fail" if gpu else SKIP_NO_GPU, f"the {m} run did not complete (exit {rc}): see logs/{m}-run.log")
        return res
    probe_lines = [ln for ln in text.splitlines() if ln.startswith("accmon:")]
    sync_lines = [ln for ln in probe_lines if "synchroniz" in ln.lower()]
    res["probe_stderr"] = probe_lines[:20]
    if res.get("cuda"):
        ck.info.setdefault("gpu", res["cuda"]["device"])
        ck.info.setdefault("capability", res["cuda"]["capability"])

    # The recording and `accmon check --json`: every probed step recorded, the run finished.
    summary: dict[str, Any] = {}
    try:
        summary = read_recording(rec)
    except Exception as exc:
        summary = {"error": repr(exc)}
    res["recording"] = {k: v for k, v in summary.items() if k != "columns"}
    res["columns"] = summary.get("columns", [])
    crc, ctext = ck.run(f"{m}-check", [py, "-c", NO_TEXTUAL, "check", "--json", rec], env, timeout=60)
    try:
        report = json.loads(ctext[ctext.index("{"):])
    except ValueError:
        report = {}
    run = report.get("run", {})
    want = res.get("probed_steps")
    broken = res.get("probe", {}).get("broken")
    rec_ok = (summary.get("steps") == want and not summary.get("problems") and run.get("status") == "finished"
              and run.get("steps") == want and crc in (0, 1) and not broken)
    ck.check(f"recording/{m}", rec_ok,
             f"{summary.get('steps')} steps in the recording, `check --json`: status {run.get('status')}, "
             f"steps {run.get('steps')} (exit {crc}); probed steps {want}, the probe counted "
             f"{res.get('probe', {}).get('steps_seen')}; alerts: {sorted({a['id'] for a in report.get('alerts', [])})}"
             + (f"; probe parts off after an internal error: {broken}" if broken else ""),
             columns=len(res["columns"]))

    sync = res.get("sync", {})
    if not gpu:
        ck.claim(f"sync_free/{m}", SKIP_NO_GPU,
                 f"loop ran on CPU ({sync.get('probed_steps')} probed steps, {sync.get('flush_steps')} with a flush); "
                 "synchronising calls are counted only on CUDA (on CPU: tests/probe/test_torch_nosync.py)")
    else:
        problems = []
        if sync.get("steps_over_plain"):
            problems.append(f"{sync['steps_over_plain']} probed non-flush steps synchronised more than the plain loop "
                            f"({sync['probed_syncs_on_other_steps']} calls; see offenders)")
        if sync.get("steps_with_probe_frame_syncs"):
            problems.append(f"{sync['steps_with_probe_frame_syncs']} probed non-flush steps with a synchronising call "
                            "made from probe code")
        err = sync.get("errmode_error")
        if err and not (sync.get("plain_syncs") and err.startswith("not run")):
            problems.append(f"under sync debug mode 'error' the loop raised: {err}")
        if sync_lines:
            problems.append(f"the probe reported a synchronising call: {sync_lines[0]}")
        if res.get("probe", {}).get("broken"):
            problems.append(f"probe parts off after an internal error: {res['probe']['broken']} (logs/{m}-run.log)")
        if not sync.get("flush_steps"):
            problems.append("no flush happened in the probed steps: flushes not covered")
        if sync.get("plain_syncs"):
            problems_note = (f"; NOTE the plain loop synchronises by itself ({sync['plain_syncs']} calls, at most "
                             f"{sync['plain_max_per_step']} a step: torch's own), so probed steps are judged by their "
                             "excess over it and by whether probe code is on the stack; mode 'error' not run")
        else:
            problems_note = ""
        detail = (f"{sync.get('probed_steps')} probed steps ({sync.get('flush_steps')} flushed, flush interval "
                  f"{sync.get('flush_s')} s) + {sync.get('errmode_steps')} under mode 'error'; synchronising calls: "
                  f"plain loop {sync.get('plain_syncs')}, probed non-flush steps {sync.get('probed_syncs_on_other_steps')}, "
                  f"flush steps {sync.get('probed_syncs_on_flush_steps')}, from probe code {sync.get('syncs_from_probe_code')}"
                  + problems_note)
        ck.claim(f"sync_free/{m}", "fail" if problems else "pass", "; ".join(problems) or detail,
                 figures={k: v for k, v in sync.items() if k != "offenders"}, offenders=sync.get("offenders", []))
        for o in sync.get("offenders", []):
            ck.say(f"  sync on {o['phase']} step {o['step']}{' (probe code on the stack)' if o['probe_frame'] else ''}: "
                   + " <- ".join(reversed(o["stack"][-4:])))

    cost = res.get("cost", {})
    figures = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cost.items() if k != "block_means_ms"}
    text_cost = (f"{cost.get('rounds')} rounds x {cost.get('steps_per_block')} steps: plain {cost.get('plain_mean_ms', 0):.3f} ms, "
                 f"accmon {cost.get('accmon_mean_ms', 0):.3f} ms per step; paired ratio {cost.get('paired_ratio', 0):.4f}, "
                 f"added {cost.get('added_us_per_step', 0):+.1f} us/step (medians: ratio {cost.get('median_ratio', 0):.4f}, "
                 f"{cost.get('added_us_per_step_median', 0):+.1f} us)")
    if not gpu:
        ck.claim(f"cost/{m}", SKIP_NO_GPU, f"CPU figures, for information only (quick sizes, not a GPU step): {text_cost}",
                 figures=figures)
    else:
        ok = cost.get("paired_ratio", 9.0) <= COST_GOAL
        ck.claim(f"cost/{m}", "pass" if ok else "fail",
                 text_cost + ("" if ok else f" — above the goal of {COST_GOAL}x"), figures=figures, goal=COST_GOAL,
                 device=res.get("cuda", {}).get("device"))
    return res


def cuda_test(ck: Check, env: dict[str, str], gpu: bool) -> None:
    """The repo's CUDA test (skipped on CPU), run by pytest without the suite's conftest (its leak checks need
    files a bare GPU machine may not have); without pytest, the test function is called directly."""
    test = "tests/probe/test_torch_nosync.py::test_no_sync_on_cuda_under_sync_debug_mode"
    tenv = dict(env)
    tenv["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the test needs none; loading the dev venv's costs seconds
    extra = os.environ.get("GPU_CHECK_PYTEST_PATH")
    if extra:
        tenv["PYTHONPATH"] = os.pathsep.join(p for p in (tenv.get("PYTHONPATH", ""), extra) if p)
    have_pytest = subprocess.run([sys.executable, "-c", "import pytest"], env=tenv, capture_output=True).returncode == 0
    if have_pytest:
        xml = os.path.join(ck.out, "logs", "cuda_test.xml")
        # No conftest (the suite's leak checks need files and plugins a GPU machine may lack) and no configured
        # addopts (a plugin's option, such as --timeout, would stop a pytest without that plugin).
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-o", "addopts=", "-rA",
               f"--junitxml={xml}", test]
        rc, text = ck.run("cuda-test", cmd, tenv, timeout=180)
        skipped = "skipped" in text.lower() and " passed" not in text
        passed = rc == 0 and " passed" in text
    else:
        cmd = [sys.executable, "-c", DIRECT_TEST]
        rc, text = ck.run("cuda-test", cmd, tenv, timeout=180)
        skipped = "SKIPPED" in text
        passed = rc == 0 and "PASSED" in text
    how = "pytest --noconftest" if have_pytest else "no pytest here: the test function called directly"
    if not gpu:
        ok = rc == 0 and skipped
        ck.claim("cuda_test/test_no_sync_on_cuda_under_sync_debug_mode", SKIP_NO_GPU,
                 f"{how}: {'skipped by the test itself, as expected' if ok else f'unexpected result (exit {rc})'}")
        if not ok:
            ck.check("cuda_test_runs", False, f"the test did not run as expected on CPU: see logs/cuda-test.log (exit {rc})")
        return
    ck.claim("cuda_test/test_no_sync_on_cuda_under_sync_debug_mode", "pass" if passed else "fail",
             f"{how}: exit {rc}; " + (text.strip().splitlines() or ["no output"])[-1])


# Without pytest: a stand-in with what the test module uses (importorskip, mark), then the test itself.
DIRECT_TEST = r"""
import importlib, sys, types
class _Mark:
    def __getattr__(self, name):
        return lambda *a, **k: (lambda f: f)
shim = types.ModuleType("pytest")
shim.importorskip = lambda name, *a, **k: importlib.import_module(name)
shim.mark = _Mark()
sys.modules["pytest"] = shim
sys.path.insert(0, "tests/probe")
import torch
if not torch.cuda.is_available():
    print("SKIPPED: needs a CUDA device"); sys.exit(0)
import test_torch_nosync as t
t.test_no_sync_on_cuda_under_sync_debug_mode()
print("PASSED")
"""


STOP_SCRIPT = r"""
import json, sys, torch
from torch import nn
dev = sys.argv[1]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(64, 32, device=dev); y = torch.randint(0, 4, (64,), device=dev)
last = -1
try:
    for i in range(200_000):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if i >= 30:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
        last = i
finally:
    json.dump({"last_step": last}, open(sys.argv[2], "w"))
"""


def other_issues(ck: Check, env: dict[str, str], gpu: bool, results: dict[str, dict[str, Any]], dev: str) -> None:
    cols = sorted({c for r in results.values() for c in r.get("columns", [])})
    # --fake-cuda runs the probe on CPU (dev "cpu"): nothing there has CUDA memory or NVML figures to record.
    device_run = gpu and dev == "cuda"
    # CUDA memory counters (issue 19): host-side allocator counters read at the flush.
    mem_src = probe_source_has("memory_allocated", "memory_reserved")
    mem_cols = [c for c in cols if re.search(r"allocated|reserved", c, re.I)
                or (re.search(r"cuda|gpu|dev", c, re.I) and re.search(r"mem|alloc|reserv", c, re.I))]
    if not mem_src:
        ck.claim("cuda_memory_counters", NOT_PRESENT, "no use of torch.cuda.memory_allocated/memory_reserved in the probe")
    elif not device_run:
        ck.claim("cuda_memory_counters", SKIP_NO_GPU, f"present in {mem_src}; memory-like series on CPU: {mem_cols}")
    else:
        ck.claim("cuda_memory_counters", "pass" if mem_cols else "fail",
                 f"present in {mem_src}; memory series recorded on the GPU run: {mem_cols or 'none'}", series=mem_cols)
    # NVML sampling (issue 19), by the probe's I/O thread.
    nvml_src = probe_source_has("pynvml", "nvmlInit")
    nvml_cols = [c for c in cols if re.search(r"nvml|gpu|util|temp|power", c, re.I)]
    kinds = sorted({k for r in results.values() for k in r.get("recording", {}).get("kinds", {})})
    if not nvml_src:
        ck.claim("nvml_sampling", NOT_PRESENT, "no NVML (pynvml) use in the probe")
    elif not device_run:
        ck.claim("nvml_sampling", SKIP_NO_GPU, f"present in {nvml_src}")
    else:
        ck.claim("nvml_sampling", "pass" if nvml_cols else "fail",
                 f"present in {nvml_src}; GPU series recorded: {nvml_cols or 'none'} (frame kinds: {kinds})",
                 series=nvml_cols)
    # --stop-on (issue 18) on a GPU run.
    py = sys.executable
    hrc, help_text = ck.run("stop-on-help", [py, "-c", NO_TEXTUAL, "run", "--help"], env, timeout=60)
    if "--stop-on" not in help_text:
        ck.claim("stop_on", NOT_PRESENT, f"`accmon run --help` has no --stop-on (exit {hrc})")
        return
    if not gpu:
        ck.claim("stop_on", SKIP_NO_GPU, "`accmon run --stop-on` is present; its GPU run needs a GPU")
        return
    script = os.path.join(ck.out, "stop_on_child.py")
    with open(script, "w") as fh:
        fh.write(STOP_SCRIPT)
    res_path = os.path.join(ck.out, "stop_on.json")
    rec = os.path.join(ck.out, "stop_on.accmon")
    rc, text = ck.run("stop-on", [py, "-c", NO_TEXTUAL, "run", "--headless", "--stop-on", "nan_loss", "--record", rec,
                                  "--", py, script, dev, res_path], env, timeout=120)
    last = None
    if os.path.exists(res_path):
        with open(res_path) as fh:
            last = json.load(fh).get("last_step")
    ok = rc not in (0, None) and last is not None and 30 <= last < 199_999
    ck.claim("stop_on", "pass" if ok else "fail",
             f"NaN loss from step 30 of 200,000 on {dev}: `accmon run --stop-on nan_loss` exit {rc}, last step {last}")


def finish(ck: Check, gpu: bool, size: str) -> int:
    failed = [c["id"] for c in ck.claims + ck.checks if c["status"] == "fail"]
    summary = {
        "issue": 20, "device": ck.info, "gpu": gpu, "sizes": size, "seconds": round(time.monotonic() - ck.t0, 1),
        "ok": not failed, "failed": failed,
        "claims": ck.claims, "checks": ck.checks,
        "skipped_for_want_of_a_gpu": [c["id"] for c in ck.claims if c["status"] == SKIP_NO_GPU],
        "not_present_in_this_tree": [c["id"] for c in ck.claims if c["status"] == NOT_PRESENT],
    }
    with open(os.path.join(ck.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    ck.say("")
    for c in ck.claims:
        ck.say(f"{c['status']:<26} {c['id']}")
    for c in ck.checks:
        ck.say(f"{c['status']:<26} (check) {c['id']}")
    if not gpu:
        ck.say("No GPU here: every GPU claim above is 'skipped: no GPU'; the rest ran on CPU.")
    elif ck.info.get("fake_cuda"):
        ck.say("FAKE CUDA (--fake-cuda): the GPU code paths ran on CPU; no figure above is about a GPU.")
    ck.say(f"{'FAILED: ' + ', '.join(failed) if failed else 'all claims that could run held'}; "
           f"summary: {os.path.join(ck.out, 'summary.json')}")
    ck.log_fh.close()
    # Printed last, and kept short (a device call returns only the last 12,000 characters of the output): the
    # stacks of offending syncs are in summary.json and gpu_check.log.
    printed = dict(summary, claims=[{k: v for k, v in c.items() if k != "offenders"} for c in ck.claims])
    print(json.dumps(printed, indent=1))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", help="output folder (default $OUT, else ./gpu_check_out)")
    ap.add_argument("--models", default="cnn,gpt")
    ap.add_argument("--quick", action="store_true", help="the small sizes even on a GPU (a smoke test)")
    ap.add_argument("--full", action="store_true", help="the GPU sizes even on CPU (slow)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--deadline", type=float, default=420.0, help="seconds for everything (commands are cut off)")
    ap.add_argument("--fake-cuda", action="store_true",
                    help="test this script's GPU paths on CPU (torch.cuda faked: no figure means anything)")
    ap.add_argument("--no-cuda-test", action="store_true", help="leave out the pytest run of the CUDA test")
    # The child (the training script that `accmon run` starts).
    ap.add_argument("--child", choices=["cnn", "gpt"], help=argparse.SUPPRESS)
    ap.add_argument("--size", choices=list(SIZES), default="quick", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--quick-flush", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
