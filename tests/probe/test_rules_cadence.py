"""Issue 15: the same verdict at every probe cadence. Real small training loops, recorded at ACCMON_EVERY-style
fixed cadences (every 1, 4 and 16 steps), diagnosed from their recordings: the same alert ids each time."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.rules import Diagnoser  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from tests.conftest import read_frames  # noqa: E402

CADENCES = (1, 4, 16)


def blobs(n=640, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g) * 1.2, y


def train(case):
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    lr = 5.0 if case == "lr_too_high" else 1e-3
    if case == "dead_relu":
        with torch.no_grad():
            model[0].bias.fill_(-8.0)
            model[2].bias.fill_(-8.0)
        lr = 1e-4
    opt = torch.optim.SGD(model.parameters(), lr) if case == "lr_too_high" else torch.optim.Adam(model.parameters(), lr)
    loader = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        with torch.no_grad():
            nn.functional.cross_entropy(model(x[:128]), y[:128])


def verdict(path):
    d = Diagnoser()
    for f in read_frames(path):
        d.observe(f)
    return sorted({a["id"] for a in d.alerts() if a["severity"] in ("warning", "critical")})


@pytest.mark.parametrize("case", ["healthy", "lr_too_high", "dead_relu"])
def test_the_same_alert_ids_at_every_cadence(tmp_path, case):
    found = {}
    for every in CADENCES:
        path = str(tmp_path / f"{case}-{every}.accmon")
        run = Run("cadence", record=path, rules=False)
        try:
            apt.install(run, every=every)
            train(case)
        finally:
            apt.uninstall()
            run.close()
        found[every] = verdict(path)
    assert all(v == found[1] for v in found.values()), found
    if case == "healthy":
        assert found[1] == []
    else:
        assert case in found[1]
