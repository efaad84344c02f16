"""What the PyTorch probe costs a training step, against the plain loop and against logging peers.

    python bench/probe_overhead.py [--blocks 12] [--block-steps 100] [--models mlp,cnn] [--no-peers]

Per model, the plain loop and each variant run in interleaved blocks in one process (plain, accmon, plain,
wandb, ...), so that drift in the machine (thermal, other load) falls on all of them alike. Phase 1 measures
accmon (and a bare ZeroMQ send) against the plain loop; phase 2 adds the peers, whose background work
(wandb's service process, TensorBoard's writer thread) then weighs on every variant. Every step is
timed on its own (`time.perf_counter` around zero_grad → forward → loss → backward → step); the table gives
median step time, the ratio to plain, and the added time per step, plus the mean (which includes the rare
flush steps that the median leaves out), and the paired ratio: the median, over rounds, of a variant's block
against the plain block of the same round, which cancels the machine's drift between rounds (short blocks,
`--block-steps 25`, pair closest).

Variants:
- `accmon`: `accmon.probe.torch.install()` on a real run (I/O thread, recording file, rules), default budget;
- `wandb`: `wandb.log()` of 3 scalars per step, offline (only if wandb is importable);
- `tensorboard`: 3 `SummaryWriter.add_scalar` calls per step (only if tensorboard is importable);
- `zmq-send`: a bare msgpack-over-ZeroMQ PUB send of 3 scalars every step: what batching saves.

The peers take their scalars the way their users do: `loss.item()` (a host read, nearly free on CPU).
Install peers in a separate environment; they are not accmon dependencies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (make_mlp, (784,)),
    "cnn": (make_cnn, (3, 32, 32)),
}


class Loop:
    """One model's training loop over a fixed set of preloaded batches (no data loading in the timing)."""

    def __init__(self, name: str, batch: int = 64) -> None:
        torch.manual_seed(0)
        make, shape = MODELS[name]
        self.model = make()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches = [(torch.randn(batch, *shape), torch.randint(0, 10, (batch,))) for _ in range(16)]
        self.i = 0

    def step(self) -> torch.Tensor:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss


class Variant:
    name = "plain"

    def begin(self) -> None: ...

    def after_step(self, loop: Loop, loss: torch.Tensor) -> None: ...

    def end(self) -> None: ...

    def close(self) -> None: ...


class Accmon(Variant):
    name = "accmon"

    def __init__(self, tmp: str, model: str) -> None:
        import accmon.probe as ap
        import accmon.probe.torch as apt
        from accmon.probe.torch import hooks

        self.hooks = hooks
        self.run = ap.start(f"bench-{model}", record=os.path.join(tmp, f"bench-{model}.accmon"))
        self.probe = apt.install(self.run)
        hooks.suspend()

    def begin(self) -> None:
        self.hooks.resume()

    def end(self) -> None:
        self.hooks.suspend()

    def close(self) -> None:
        self.hooks.detach()
        self.run.close()


class Wandb(Variant):
    name = "wandb"

    def __init__(self, tmp: str) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(project="accmon-bench", mode="offline", dir=tmp)

    def after_step(self, loop: Loop, loss: torch.Tensor) -> None:
        self.run.log({"loss": loss.item(), "lr": loop.opt.param_groups[0]["lr"], "step": loop.i})

    def close(self) -> None:
        self.run.finish()


class TensorBoard(Variant):
    name = "tensorboard"

    def __init__(self, tmp: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(tmp, "tb"))

    def after_step(self, loop: Loop, loss: torch.Tensor) -> None:
        w = self.writer
        w.add_scalar("loss", loss.item(), loop.i)
        w.add_scalar("lr", loop.opt.param_groups[0]["lr"], loop.i)
        w.add_scalar("step", loop.i, loop.i)

    def close(self) -> None:
        self.writer.close()


class ZmqSend(Variant):
    name = "zmq-send"

    def __init__(self, tmp: str) -> None:
        import msgspec
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"ipc://{tmp}/bench.sock")
        self.pack = msgspec.msgpack.Encoder().encode
        self.noblock = zmq.NOBLOCK

    def after_step(self, loop: Loop, loss: torch.Tensor) -> None:
        frame = {"step": loop.i, "cols": {"loss": loss.item(), "lr": loop.opt.param_groups[0]["lr"], "t": time.time()}}
        self.sock.send(self.pack(frame), self.noblock)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def optional(factory: Callable[[str], Variant], tmp: str) -> Variant | None:
    try:
        return factory(tmp)
    except ImportError as exc:
        print(f"# {factory.__name__.lower()}: not installed here ({exc.name}); skipped", file=sys.stderr)
        return None


def measure(loop: Loop, variants: list[Variant], blocks: int, block_steps: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(block_steps):  # warm-up: allocator, kernels' first calls
        loop.step()
    for b in range(blocks):
        # Rotate the order each block: no variant always runs right after the same other one.
        order = variants[b % len(variants):] + variants[: b % len(variants)]
        for v in order:
            v.begin()
            out = times[v.name]
            c0 = time.process_time()
            for _ in range(block_steps):
                t0 = time.perf_counter()
                loss = loop.step()
                v.after_step(loop, loss)
                out.append(time.perf_counter() - t0)
            # CPU time of the whole process (training threads, accmon's I/O thread) per step of the block:
            # steadier than wall time on a shared machine; blind to work in other processes (wandb's service).
            cpu[v.name].append((time.process_time() - c0) / block_steps)
            v.end()
    return times, cpu


def paired_ratio(times: dict[str, list[float]], name: str, block_steps: int) -> float:
    """Median over rounds of (this variant's block median / the plain block's median in the same round).

    Each round's blocks run seconds apart, so the machine's drift over minutes (other tenants, clocks) cancels
    within a pair; the pooled medians of the table do not cancel it."""
    def blocks(ts: list[float]) -> list[float]:
        return [statistics.median(ts[i:i + block_steps]) for i in range(0, len(ts), block_steps)]
    return statistics.median(v / p for v, p in zip(blocks(times[name]), blocks(times["plain"])))


def report(model: str, times: dict[str, list[float]], cpu: dict[str, list[float]], block_steps: int) -> None:
    base = statistics.median(times["plain"])
    base_mean = statistics.fmean(times["plain"])
    base_cpu = statistics.median(cpu["plain"])
    print(f"\n{model}: {len(times['plain'])} steps per variant, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'variant':<12} {'median ms':>10} {'ratio':>7} {'added ms':>9} {'mean ms':>9} {'mean ratio':>10} "
          f"{'cpu ms':>8} {'cpu ratio':>9} {'paired':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        mean = statistics.fmean(ts)
        c = statistics.median(cpu[name])
        print(f"{name:<12} {med * 1e3:>10.3f} {med / base:>7.3f} {(med - base) * 1e3:>+9.3f} {mean * 1e3:>9.3f} "
              f"{mean / base_mean:>10.3f} {c * 1e3:>8.3f} {c / base_cpu:>9.3f} "
              f"{paired_ratio(times, name, block_steps):>7.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--block-steps", type=int, default=100)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--no-peers", action="store_true", help="plain, accmon and the bare ZeroMQ send only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="accmon-bench-") as tmp:
        zmq_send = optional(ZmqSend, tmp)
        for model in args.models.split(","):
            loop = Loop(model)
            probed = Accmon(tmp, model)
            try:
                # Phase 1: accmon against the plain loop, nobody else's threads or processes loaded.
                variants = [Variant(), probed] + ([zmq_send] if zmq_send else [])
                times, cpu = measure(loop, variants, args.blocks, args.block_steps)
                report(f"{model} (phase 1: accmon alone)", times, cpu, args.block_steps)
                c = probed.probe.cadence
                print(f"accmon cadence: grads every {c.every['grads']}, deep every {c.every['deep']}, "
                      f"estimated probe share {c.overhead():.2%}")
                if args.no_peers:
                    continue
                # Phase 2: the peers too, all interleaved. wandb's service process and TensorBoard's writer
                # thread stay loaded through every block (on 2 cores they slow all variants, accmon's included).
                peers = [v for v in (optional(Wandb, tmp), optional(TensorBoard, tmp)) if v is not None]
                try:
                    if peers:
                        times, cpu = measure(loop, [Variant(), probed, *peers], args.blocks, args.block_steps)
                        report(f"{model} (phase 2: with the peers)", times, cpu, args.block_steps)
                finally:
                    for v in peers:
                        v.close()
            finally:
                probed.close()
        if zmq_send is not None:
            zmq_send.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
