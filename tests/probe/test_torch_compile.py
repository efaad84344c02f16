"""torch.compile with the probe installed: no graph break from the hooks, and graceful fallback.

The hooks are registered before compiling (as `accmon run` does, at `import torch`) and return at once
while dynamo traces, so a compiled model is one graph (fullgraph=True would raise on a break). What the
compiled region hides (activations inside it; a loss computed inside a compiled step) is simply missing;
everything outside it is still measured. `aot_eager` compiles without a C++ toolchain and keeps this fast.
"""

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402


class Sink:
    def __init__(self):
        self.cols = set()
        self.steps = []
        self.facts = {}

    def log_columns(self, steps, cols, hists=None, times=None):
        self.steps += steps
        self.cols |= set(cols)

    def set_facts(self, **facts):
        self.facts.update(facts)


@pytest.fixture
def sink():
    torch._dynamo.reset()
    s = Sink()
    apt.install(s, every=1)
    yield s
    apt.uninstall()
    torch._dynamo.reset()
    _stop_tqdm_monitor()


def _stop_tqdm_monitor():
    """Inductor's compile shows tqdm progress, whose first bar starts tqdm's monitor thread (a daemon that lives
    for the process): end it, as the leak check asks of every thread a test starts."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    monitor = getattr(tqdm, "monitor", None)
    if monitor is not None:
        monitor.exit()
        monitor.join(timeout=5)
        tqdm.monitor = None


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)


def test_compiled_model_is_one_graph_and_still_measured(sink):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        for _ in range(6):
            opt.zero_grad()
            loss_fn(compiled(x), y).backward()
            opt.step()
    # torch.compile warns about global hooks firing for its wrapper: the probe expects that and silences it.
    assert not [w for w in caught if "global hooks" in str(w.message)]
    apt.active().flush()
    assert sink.steps == list(range(6))
    assert {"loss", "acc", "grad_norm", "grad_norm/0", "update_ratio/2", "input_mean"} <= sink.cols
    assert sink.facts["model"]["compiled"] is True and sink.facts["model"]["name"] == "Sequential"


def test_loss_inside_a_compiled_step_falls_back_to_what_is_outside(sink):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    @torch.compile(backend="aot_eager")
    def forward_loss(x, y):
        return loss_fn(model(x), y)

    x, y = data()
    for _ in range(4):
        opt.zero_grad()
        forward_loss(x, y).backward()
        opt.step()
    apt.active().flush()
    assert sink.steps == list(range(4))  # steps still come from the optimizer
    assert "grad_norm/0" in sink.cols and "lr" in sink.cols
    assert "loss" not in sink.cols  # traced away: missing, not wrong


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_trace_records_none_of_the_probe_ops(sink):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with_probe = [n.kind() for n in torch.jit.trace(model, x).inlined_graph.nodes()]
    apt.uninstall()
    without = [n.kind() for n in torch.jit.trace(model, x).inlined_graph.nodes()]
    assert with_probe == without
