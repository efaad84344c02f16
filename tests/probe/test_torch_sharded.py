"""Sharded models (FSDP2 on CPU, one gloo rank): gradients are read through their local shards, never with a
collective inside a hook, and published as per-layer sums of squares (grad_sq/<layer>) that the viewer adds
across ranks; partial norms are not published as if they were whole."""

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard") or not dist.is_available():
    pytest.skip("needs FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)


class Sink:
    def __init__(self):
        self.cols = {}

    def log_columns(self, steps, cols, hists=None, times=None):
        for k, v in cols.items():
            self.cols.setdefault(k, []).extend(v)

    def set_facts(self, **facts):
        pass


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fsdp2_gradients_are_published_as_shard_sums_of_squares(one_rank):
    sink = Sink()
    apt.install(sink, every=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    fsdp.fully_shard(model[0])
    fsdp.fully_shard(model)
    assert type(model[0].weight).__name__ == "DTensor"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    expected = []
    try:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            expected.append(sum(p.grad.full_tensor().pow(2).sum().item() for p in model[0].parameters()))
            opt.step()
    finally:
        apt.uninstall()
    assert sink.cols["grad_sq/0"] == pytest.approx(expected, rel=1e-5)
    assert "grad_sq/2" in sink.cols and len(sink.cols["loss"]) == 3
    assert not any(k.startswith(("grad_norm", "weight_norm", "update_ratio")) for k in sink.cols)
