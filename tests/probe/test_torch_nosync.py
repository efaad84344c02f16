"""No per-step host synchronisation: nothing the probe does during a step reads a device value.

On CPU there is no device to wait for, so the test watches what would wait on one. Every aten op run from
accmon's torch code goes through a TorchDispatchMode that records those that synchronise on CUDA (reading a
scalar, data-dependent output sizes); `.tolist()`, `.numpy()` and `.cpu()`, which bypass the dispatcher, are
counted by wrapping them. The only place allowed to read values is the ledger's transfer, once per flush.
On a GPU, torch.cuda.set_sync_debug_mode("error") makes any synchronisation an error: the same loop must run.
"""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402

PROBE_DIR = os.path.dirname(apt.__file__)
# The one function that may read values: it runs once per flush, after the transfer has landed.
TRANSFER = "host_arrays"

# aten ops that make the host wait for a CUDA device: scalar reads, and outputs whose size depends on values.
SYNCING = {
    "_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select", "_unique", "_unique2",
    "unique_dim", "unique_consecutive", "bincount", "repeat_interleave", "allclose",
}


def accmon_stack(depth=2):
    """Names of the accmon torch-probe functions on the current stack (innermost first)."""
    names = []
    f = sys._getframe(depth)
    while f is not None:
        if f.f_code.co_filename.startswith(PROBE_DIR):
            names.append(f.f_code.co_name)
        f = f.f_back
    return names


class SyncWatch(TorchDispatchMode):
    """Records syncing ops and value reads made from accmon code, and where they were made."""

    def __init__(self):
        super().__init__()
        self.bad: list[tuple[str, list[str]]] = []
        self.transfers = 0
        self.accmon_ops = 0
        self._saved = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        stack = accmon_stack()
        if stack:
            self.accmon_ops += 1
            bool_index = name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []) or []
            )
            if (name in SYNCING or bool_index) and TRANSFER not in stack:
                self.bad.append((name, stack))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for meth in ("tolist", "numpy", "cpu", "__array__"):
            orig = getattr(torch.Tensor, meth)
            self._saved[meth] = orig

            def wrapped(t, *a, _orig=orig, _meth=meth, **k):
                stack = accmon_stack()
                if stack:
                    if TRANSFER in stack:
                        self.transfers += _meth == "numpy"
                    else:
                        self.bad.append((_meth, stack))
                return _orig(t, *a, **k)

            setattr(torch.Tensor, meth, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        for meth, orig in self._saved.items():
            setattr(torch.Tensor, meth, orig)
        return super().__exit__(*exc)


class Sink:
    def __init__(self):
        self.steps = []
        self.facts = {}
        self.cols = set()

    def log_columns(self, steps, cols, hists=None, times=None):
        self.steps.extend(steps)
        self.cols.update(cols)

    def set_facts(self, **facts):
        self.facts.update(facts)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, 5))

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def train(steps, device="cpu", val_every=5):
    torch.manual_seed(0)
    model = Net().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(steps, 16, 3, 8, 8, device=device)
    y = torch.randint(0, 5, (steps, 16), device=device)
    for i in range(steps):
        opt.zero_grad()
        loss_fn(model(x[i]), y[i]).backward()
        opt.step()
        if i % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                F.cross_entropy(model(x[0]), y[0])
            model.train()


@pytest.mark.parametrize("every", [1, None], ids=["all-statistics-every-step", "adaptive"])
def test_no_value_read_outside_the_flush_on_cpu(every):
    sink = Sink()
    probe = apt.install(sink, every=every)
    probe.flush_s = 0.05  # several flushes within the test: their reads must be the only ones
    watch = SyncWatch()
    try:
        with watch:
            train(60)
            probe.flush()
    finally:
        apt.uninstall()
    assert watch.accmon_ops > 0, "the dispatch mode saw none of the probe's ops: the test proves nothing"
    assert watch.bad == [], f"value reads outside the flush: {watch.bad[:5]}"
    assert sink.steps == list(range(60))
    assert 1 <= watch.transfers <= probe.ledger.flushes + 1  # one read per flush, not per step
    assert probe.ledger.flushes < 60
    assert "acc" in sink.cols and "grad_norm" in sink.cols


def test_the_watch_catches_a_sync_made_from_probe_code():
    # The detector itself must fail on the thing it looks for, or the test above proves nothing.
    watch = SyncWatch()
    from accmon.probe.torch import classify

    with watch:
        t = torch.tensor([1.0, 2.0])
        classify._flat(t).sum().item()  # accmon's frame is not on the stack: the test's own .item() is fine
        exec(compile("t.sum().item(); t.tolist()", os.path.join(PROBE_DIR, "fake.py"), "exec"), {"t": t})
    assert [b[0] for b in watch.bad] == ["_local_scalar_dense", "tolist"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_sync_on_cuda_under_sync_debug_mode():
    sink = Sink()
    probe = apt.install(sink, every=1)
    probe.flush_s = 0.05
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train(60, device="cuda")
    finally:
        torch.cuda.set_sync_debug_mode(0)
        apt.uninstall()  # the final drain waits for the device: allowed, at close
    assert sink.steps == list(range(60))
    assert "acc" in sink.cols and "grad_norm" in sink.cols and "act_zero/act" in sink.cols
