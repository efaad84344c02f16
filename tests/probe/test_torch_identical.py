"""The probe never changes what training computes: same losses and weights, bit for bit, with and without it.

The loop uses everything that could be disturbed: a shuffling DataLoader and dropout (the global RNG),
batch norm (running statistics), Adam (optimizer state), validation in eval mode, a functional loss, and
the probe taking every statistic at every step (input copies, weight snapshots, activation samples).
"""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402


class Sink:
    def __init__(self):
        self.steps = 0

    def log_columns(self, steps, cols, hists=None, times=None):
        self.steps += len(steps)

    def set_facts(self, **facts):
        pass


def train():
    torch.manual_seed(1234)
    x = torch.randn(192, 12)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(12, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 3),
                          nn.LogSoftmax(dim=1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, val = [], []
    for _epoch in range(3):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.detach().clone())
        model.eval()
        with torch.no_grad():
            val.append(F.nll_loss(model(x), y).clone())
    weights = [p.detach().clone() for p in model.parameters()] + [b.clone() for b in model.buffers()]
    return torch.stack(losses), torch.stack(val), weights, torch.randn(4)  # the RNG's state after training


def test_losses_and_weights_are_bit_identical_with_the_probe():
    plain = train()
    sink = Sink()
    probe = apt.install(sink, every=1)
    try:
        probed = train()
        probe.flush()
    finally:
        apt.uninstall()
    assert sink.steps == 18  # the probe did observe this loop
    assert torch.equal(plain[0], probed[0])
    assert torch.equal(plain[1], probed[1])
    assert all(torch.equal(a, b) for a, b in zip(plain[2], probed[2]))
    assert torch.equal(plain[3], probed[3])
