"""The PyTorch probe on real small training loops, recorded by a real run and read back from the recording."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from tests.conftest import read_frames  # noqa: E402


class Recorded:
    """A run recording to a file; after `close()`, its metrics by name and step, its facts and hists."""

    def __init__(self, path):
        self.path = str(path)
        self.run = Run("test", record=self.path, rules=False)
        self.metrics: dict[str, dict[int, float]] = {}
        self.facts: dict = {}
        self.hists: dict[str, list] = {}
        self.end = None

    def close(self):
        apt.uninstall()
        self.run.close()
        for f in read_frames(self.path):
            if f["kind"] == "steps":
                for name, values in f["cols"].items():
                    col = self.metrics.setdefault(name, {})
                    for s, v in zip(f["steps"], values):
                        if v is not None:
                            col[s] = v
                for name, counts in (f.get("hists") or {}).items():
                    old = self.hists.get(name)
                    self.hists[name] = counts if old is None else [a + b for a, b in zip(old, counts)]
            elif f["kind"] == "facts":
                self.facts.update(f["facts"])
            elif f["kind"] == "end":
                self.end = f
        return self

    def series(self, name):
        col = self.metrics.get(name, {})
        return [col[s] for s in sorted(col)]


@pytest.fixture
def rec(tmp_path):
    r = Recorded(tmp_path / "run.accmon")
    yield r
    apt.uninstall()
    if not r.run.closed:
        r.run.close()


def blobs(n=256, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def mlp(d=10, classes=3, act=nn.ReLU):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 32), act(), nn.Linear(32, classes))


def test_multiclass_loop_records_loss_accuracy_and_layer_statistics(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    expected_acc, expected_loss = [], []
    for i in range(0, 256, 32):
        out = model(x[i : i + 32])
        loss = loss_fn(out, y[i : i + 32])
        expected_acc.append((out.argmax(1) == y[i : i + 32]).float().mean().item())
        expected_loss.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    rec.close()
    assert rec.series("loss") == pytest.approx(expected_loss, rel=1e-6)
    assert rec.series("acc") == pytest.approx(expected_acc)
    assert sorted(rec.metrics["loss"]) == list(range(8))
    for name in ("grad_norm", "grad_norm/0", "grad_norm/2", "weight_norm/0", "update_ratio", "update_ratio/2",
                 "act_zero/1", "act_mean/1", "act_std/1", "input_mean", "input_feat_std_min", "lr", "lr/0",
                 "batch_classes", "pred_top_frac", "nonfinite_grads"):
        assert len(rec.metrics.get(name, {})) == 8, name
    assert set(rec.series("lr")) == {0.05}
    assert all(0 < r < 1 for r in rec.series("update_ratio"))
    assert rec.series("nonfinite_grads") == [0] * 8
    assert sum(rec.hists["target"]) == 256
    f = rec.facts
    assert f["framework"] == "torch"
    assert f["task"] == "multiclass" and f["num_classes"] == 3
    assert f["loss"]["kind"] == "CrossEntropyLoss"
    assert f["model"]["name"] == "Sequential" and [layer["kind"] for layer in f["model"]["layers"]] == ["Linear", "ReLU", "Linear"]
    assert f["model"]["output_activation"] == "none"
    assert f["optimizer"][0]["kind"] == "SGD" and f["optimizer"][0]["param_groups"][0]["momentum"] == 0.9
    assert f["optimizer"][0]["covers_model"] == 1.0
    assert f["targets"]["distinct"] == len(set(y[:32].tolist())) and f["targets"]["integral"] is True
    assert f["inputs"]["features"] == 10 and f["batch_size"] == 32


def test_validation_under_no_grad_and_eval_is_val_not_train(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    val_expected = []
    for _epoch in range(3):
        model.train()
        for i in range(0, 192, 32):
            opt.zero_grad()
            loss_fn(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            losses, correct = [], 0
            for i in range(192, 256, 32):  # two validation batches
                out = model(x[i : i + 32])
                losses.append(loss_fn(out, y[i : i + 32]).item())
                correct += (out.argmax(1) == y[i : i + 32]).sum().item()
        val_expected.append((sum(losses) / 2, correct / 64))
    rec.close()
    assert sorted(rec.metrics["loss"]) == list(range(18))  # only the training batches are steps
    assert sorted(rec.metrics["val_loss"]) == [5, 11, 17]  # at the step each pass ended
    assert rec.series("val_loss") == pytest.approx([v[0] for v in val_expected], rel=1e-6)
    assert rec.series("val_acc") == pytest.approx([v[1] for v in val_expected])


def test_epochs_from_dataloader_exhaustion_and_shuffle_fact(rec):
    x, y = blobs(n=200)
    train = DataLoader(TensorDataset(x[:160], y[:160]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[160:], y[160:]), batch_size=20)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run)
    for _epoch in range(3):
        for xb, yb in train:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        with torch.no_grad():
            for xb, yb in val:  # a validation loader running dry is no epoch
                loss_fn(model(xb), yb)
    rec.close()
    assert rec.series("epoch") == [0] * 5 + [1] * 5 + [2] * 5
    assert rec.facts["epoch_steps"] == 5
    assert rec.facts["shuffled"] is True and rec.facts["batch_size"] == 32
    assert len(rec.metrics["val_loss"]) == 3


def test_unshuffled_loader_is_a_fact(rec):
    x, y = blobs(n=64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    apt.install(rec.run)
    for xb, yb in loader:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    rec.close()
    assert rec.facts["shuffled"] is False


@pytest.mark.parametrize("loss_kind", ["BCELoss", "BCEWithLogitsLoss"])
def test_binary_accuracy_for_probabilities_and_logits(rec, loss_kind):
    x, _ = blobs(n=128)
    y = (x[:, 0] > 0).float().unsqueeze(1)
    torch.manual_seed(0)
    layers = [nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 1)]
    if loss_kind == "BCELoss":
        layers.append(nn.Sigmoid())
    model = nn.Sequential(*layers)
    loss_fn = getattr(nn, loss_kind)()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    apt.install(rec.run, every=1)
    expected = []
    for i in range(0, 128, 32):
        out = model(x[i : i + 32])
        pred = out > (0.5 if loss_kind == "BCELoss" else 0.0)
        expected.append((pred == (y[i : i + 32] > 0.5)).float().mean().item())
        opt.zero_grad()
        loss_fn(out, y[i : i + 32]).backward()
        opt.step()
    rec.close()
    assert rec.series("acc") == pytest.approx(expected)
    assert rec.facts["task"] == "binary"
    assert rec.facts["model"]["output_activation"] == ("sigmoid" if loss_kind == "BCELoss" else "none")
    assert "act_sat/1" in rec.metrics  # the tanh layer
    assert rec.hists["target"][1] == int(y.sum().item())


def test_multilabel_task(rec):
    x, _ = blobs(n=64)
    y = (torch.stack([x[:, 0], x[:, 1], -x[:, 2], x[:, 3]], 1) > 0).float()
    model = nn.Sequential(nn.Linear(10, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    apt.install(rec.run, every=1)
    for i in range(0, 64, 16):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x[i : i + 16]), y[i : i + 16]).backward()
        opt.step()
    rec.close()
    assert rec.facts["task"] == "multilabel" and rec.facts["num_classes"] == 4
    assert rec.facts["loss"]["via"] == "functional"
    assert len(rec.hists["target"]) == 4
    assert len(rec.series("acc")) == 4


def test_functional_loss_and_functional_softmax_is_seen_in_the_values(rec):
    # The classic MNIST example: F.relu and F.log_softmax inside forward(), F.nll_loss outside.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(10, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)

    x, y = blobs()
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    apt.install(rec.run, every=1)
    expected = []
    for i in range(0, 128, 32):
        out = model(x[i : i + 32])
        loss = F.nll_loss(out, y[i : i + 32])
        expected.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    rec.close()
    assert rec.series("loss") == pytest.approx(expected, rel=1e-6)
    assert rec.facts["loss"] == {"kind": "NLLLoss", "reduction": "mean", "via": "functional", "ignore_index": -100}
    assert rec.facts["model"]["output_activation"] == "log_softmax"
    assert rec.facts["predictions"]["logsumexp_zero"] is True
    assert "grad_norm/fc1" in rec.metrics


def test_double_softmax_shows_as_softmax_output_into_cross_entropy(rec):
    x, y = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    for i in range(0, 64, 32):
        opt.zero_grad()
        loss_fn(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    rec.close()
    assert rec.facts["model"]["output_activation"] == "softmax"
    assert rec.facts["predictions"]["rows_sum_to_one"] is True
    assert "act_sat/3" in rec.metrics


def test_mse_on_one_hot_targets_is_scored_as_classification(rec):
    x, y = blobs()
    onehot = F.one_hot(y, 3).float()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.MSELoss()
    apt.install(rec.run, every=1)
    for _epoch in range(2):
        for i in range(0, 256, 32):
            opt.zero_grad()
            loss_fn(model(x[i : i + 32]), onehot[i : i + 32]).backward()
            opt.step()
    apt.active().flush()  # the flush resolves the task from the first batch's targets
    for i in range(0, 64, 32):  # after the targets were seen: accuracy from argmax
        opt.zero_grad()
        loss_fn(model(x[i : i + 32]), onehot[i : i + 32]).backward()
        opt.step()
    rec.close()
    assert rec.facts["targets"]["one_hot"] is True
    assert rec.facts["task"] == "multiclass" and rec.facts["loss"]["kind"] == "MSELoss"
    assert len(rec.metrics["acc"]) >= 2


def test_regression_has_loss_and_no_accuracy(rec):
    x, _ = blobs()
    target = x[:, :1] * 2 + 0.5
    model = nn.Sequential(nn.Linear(10, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    apt.install(rec.run, every=1)
    for i in range(0, 256, 32):
        opt.zero_grad()
        nn.L1Loss()(model(x[i : i + 32]), target[i : i + 32]).backward()  # a new loss module every step
        opt.step()
    rec.close()
    assert len(rec.metrics["loss"]) == 8
    assert "acc" not in rec.metrics
    assert rec.facts["task"] == "regression"


def test_frozen_parameters_shared_modules_and_two_optimizers(rec):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(10, 16)
            self.block = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = self.block(self.embed(x))
            h = self.block(h)  # the same block twice: shared module and parameters
            return self.head(h)

    x, y = blobs()
    torch.manual_seed(0)
    model = Net()
    model.embed.requires_grad_(False)  # frozen
    opt_body = torch.optim.SGD(model.block.parameters(), lr=0.05)
    opt_head = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    apt.install(rec.run, every=1)
    for i in range(0, 128, 32):
        opt_body.zero_grad()
        opt_head.zero_grad()
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt_body.step()
        opt_head.step()
    rec.close()
    assert sorted(rec.metrics["loss"]) == [0, 1, 2, 3]  # the first optimizer's steps are the steps
    assert "grad_norm/block.0" in rec.metrics and "grad_norm/embed" not in rec.metrics
    assert "grad_norm/head" in rec.metrics  # the second optimizer's gradients join the step's row
    assert "act_zero/block.1" in rec.metrics  # both calls of the shared ReLU, summed
    assert len(rec.facts["optimizer"]) == 2
    assert rec.facts["optimizer"][0]["covers_model"] == pytest.approx(272 / (272 + 51))
    assert "lr/opt1.0" in rec.metrics


def test_custom_loss_function_with_observe(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    w = apt.watch(model, opt, run=rec.run, every=1)

    def focal(out, target):  # a custom loss: no loss module, no functional loss the probe knows
        p = out.softmax(1).gather(1, target[:, None]).squeeze(1)
        return (-(1 - p) ** 2 * p.log()).mean()

    expected = []
    for i in range(0, 128, 32):
        out = model(x[i : i + 32])
        loss = focal(out, y[i : i + 32])
        w.observe(out, y[i : i + 32], loss)
        expected.append((out.argmax(1) == y[i : i + 32]).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    w.close()
    rec.close()
    assert rec.series("acc") == pytest.approx(expected)
    assert len(rec.metrics["loss"]) == 4
    assert "grad_norm/0" in rec.metrics


def test_watch_log_and_log_eval(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with apt.watch(model, opt, nn.CrossEntropyLoss(), run=rec.run) as w:
        for i in range(0, 96, 32):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            loss.backward()
            opt.step()
            w.log(custom=float(i), tensor_metric=loss.detach() * 2)  # a tensor is read at the flush, not now
        w.log_eval(loss=0.5, acc=torch.tensor(0.75))
    rec.close()
    # loss_fn given as a module: the functional call in this loop is not it, so no loss is recorded
    assert "loss" not in rec.metrics
    assert rec.series("custom") == [0.0, 32.0, 64.0]
    assert len(rec.metrics["tensor_metric"]) == 3
    assert rec.metrics["val_loss"] == {2: 0.5} and rec.metrics["val_acc"] == {2: 0.75}


def test_watch_checks_its_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        apt.watch("model")
    with pytest.raises(TypeError, match="Optimizer"):
        apt.watch(nn.Linear(2, 2), optimizer=object())


def test_nan_loss_is_recorded_and_the_probe_keeps_going(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    apt.install(rec.run, every=1)
    for i in range(0, 128, 32):
        xb = x[i : i + 32].clone()
        if i == 64:
            xb[0, 0] = float("nan")
        opt.zero_grad()
        F.cross_entropy(model(xb), y[i : i + 32]).backward()
        opt.step()
    rec.close()
    loss = rec.series("loss")
    assert not math.isnan(loss[1]) and math.isnan(loss[2])
    assert rec.series("nonfinite_grads")[2] > 0
    assert math.isnan(rec.series("grad_norm")[2])


def test_gradient_accumulation_counts_one_step_per_optimizer_step(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    apt.install(rec.run, every=1)
    expected = []
    for i in range(0, 256, 64):
        opt.zero_grad()
        losses = []
        for j in range(i, i + 64, 16):  # four micro-batches per step
            loss = F.cross_entropy(model(x[j : j + 16]), y[j : j + 16])
            (loss / 4).backward()
            losses.append(loss.item())
        opt.step()
        expected.append(sum(losses) / 4)
    rec.close()
    assert rec.series("loss") == pytest.approx(expected, rel=1e-6)
    assert sorted(rec.metrics["loss"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("targets", ["fresh", "one buffer refilled", "changed after the step"])
def test_accuracy_of_steps_that_sample_nothing_else_is_each_steps_own(rec, targets):
    """Between sampled steps a CPU step's accuracy is computed at the flush, for hundreds of steps at once
    (fast steps can't spare three small kernels each). Whatever the script does with its target tensors,
    a reported accuracy is the step's own: a target refilled in place is read in its step, and one changed
    after its step, before the flush could read it, leaves that step's accuracy out (never a wrong value)."""
    from accmon.probe.torch import hooks
    from accmon.probe.torch.probe import TorchProbe

    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = hooks.attach(TorchProbe(rec.run, every=1000, flush_s=0.05))  # step 0 sampled, then none
    buffer = torch.empty(32, dtype=torch.long)
    expected = []
    for step in range(48):
        i = step % 8 * 32
        if targets == "one buffer refilled":
            yb = buffer.copy_(y[i : i + 32])
        else:
            yb = y[i : i + 32].clone()
        out = model(x[i : i + 32])
        loss = F.cross_entropy(out, yb)
        expected.append((out.argmax(1) == yb).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if targets == "changed after the step":
            yb.fill_(-5)
        if step == 23:
            import time
            time.sleep(0.06)  # a flush happens within the next steps
    rec.close()
    got = rec.metrics["acc"]
    assert got and all(v == pytest.approx(expected[s]) for s, v in got.items())
    assert sorted(rec.metrics["loss"]) == list(range(48))
    if targets == "fresh":
        assert sorted(got) == list(range(48)) and probe.d_batched_acc and probe.ledger.stale == 0
    elif targets == "one buffer refilled":
        assert sorted(got) == list(range(48)) and probe.ledger.stale == 0
    else:
        # Deferred steps up to the first flush lose their accuracy; from then on it is read in the step.
        assert probe.ledger.stale > 0
        assert 0 in got and 47 in got and len(got) < 48
        assert sorted(got)[-20:] == list(range(28, 48))


def test_slow_steps_compute_accuracy_in_the_step(rec):
    """Keeping outputs for the flush pays on short steps only: on long ones accuracy is computed in the step."""
    import time

    from accmon.probe.torch import hooks
    from accmon.probe.torch.losswatch import DEFER_STEP_S
    from accmon.probe.torch.probe import TorchProbe

    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = hooks.attach(TorchProbe(rec.run, flush_s=0.05))
    expected = []
    for step in range(24):
        i = step % 8 * 32
        out = model(x[i : i + 32])
        loss = F.cross_entropy(out, y[i : i + 32])
        expected.append((out.argmax(1) == y[i : i + 32]).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        time.sleep(2 * DEFER_STEP_S)
    rec.close()
    got = rec.metrics["acc"]
    assert sorted(got) == list(range(24)) and all(v == pytest.approx(expected[s]) for s, v in got.items())
    assert not probe.d_batched_acc, "a slow step's accuracy was deferred"


def test_uninstalled_probe_leaves_torch_as_it_was():
    from torch.nn.modules import module as M
    from torch.optim import optimizer as O

    before = (len(M._global_forward_hooks), len(M._global_forward_pre_hooks), len(O._global_optimizer_pre_hooks),
              F.cross_entropy, nn.Module.__call__)

    class Sink:
        def log_columns(self, *a, **k):
            pass

        def set_facts(self, **f):
            pass

    apt.install(Sink())
    assert F.cross_entropy is not before[3] and nn.Module.__call__ is not before[4]
    assert len(M._global_forward_hooks) == 0  # no global module hook: modules keep torch's fast path
    apt.uninstall()
    after = (len(M._global_forward_hooks), len(M._global_forward_pre_hooks), len(O._global_optimizer_pre_hooks),
             F.cross_entropy, nn.Module.__call__)
    assert after == before


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_still_compiles_functional_losses_under_the_probe(rec):
    apt.install(rec.run)

    class M(nn.Module):
        def forward(self, x, y):
            return F.cross_entropy(x, y)

    scripted = torch.jit.script(M())
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert scripted(x, y).item() == pytest.approx(F.cross_entropy(x, y).item())
    torch.jit.script(nn.CrossEntropyLoss())
    rec.close()


def test_long_evaluation_is_folded_and_manual_update_loops_still_have_steps(rec, monkeypatch):
    from accmon.probe.torch import losswatch

    monkeypatch.setattr(losswatch, "VAL_COMPACT", 8)
    monkeypatch.setattr(losswatch, "LOSS_STEPS_AFTER", 3)
    x, y = blobs()
    model = mlp()
    apt.install(rec.run, every=1)
    losses = []
    for i in range(0, 256, 32):  # no torch.optim: the weights are updated by hand
        loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        val = [F.cross_entropy(model(x[i : i + 8]), y[i : i + 8]).item() for i in range(0, 200, 8)]  # 25 batches
        correct = (model(x[:200]).argmax(1) == y[:200]).sum().item()
    assert len(apt.active().val_parts) < 2 * 25  # folded on the way
    rec.close()
    # The first LOSS_STEPS_AFTER loss calls are taken as one step, then each call is a step.
    assert sorted(rec.metrics["loss"]) == [0, 1, 2, 3, 4, 5]
    assert rec.series("loss")[0] == pytest.approx(sum(losses[:3]) / 3, rel=1e-6)
    assert rec.series("loss")[1:] == pytest.approx(losses[3:], rel=1e-6)
    assert sorted(rec.metrics["val_loss"]) == [5]
    assert rec.series("val_loss") == pytest.approx([sum(val) / 25], rel=1e-5)
    assert rec.series("val_acc") == pytest.approx([correct / 200])


def test_mixed_precision_autocast_and_grad_scaler(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    apt.install(rec.run, every=1)
    for i in range(0, 128, 32):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
        scaler.scale(loss).backward()
        scaler.step(opt)  # unscales before optimizer.step(): the probe sees true gradients
        scaler.update()
    rec.close()
    assert len(rec.metrics["loss"]) == 4 and len(rec.metrics["acc"]) == 4
    g = rec.series("grad_norm")
    assert len(g) == 4 and all(0 < v < 100 for v in g)  # unscaled (a scale of 1024 would show)
    assert "act_zero/1" in rec.metrics


def test_a_deep_model_with_many_layers(rec):
    torch.manual_seed(0)
    layers = []
    for _ in range(40):
        layers += [nn.Linear(16, 16), nn.GELU()]
    model = nn.Sequential(nn.Linear(10, 16), *layers, nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = blobs()
    apt.install(rec.run, every=1)
    for i in range(0, 96, 32):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    rec.close()
    assert len([k for k in rec.metrics if k.startswith("grad_norm/")]) == 42
    assert len([k for k in rec.metrics if k.startswith("act_mean/")]) == 40
    assert len(rec.facts["model"]["layers"]) == 82


def test_a_forgotten_optimizer_step_is_reported_as_pending_loss_calls(rec):
    x, y = blobs(n=64)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # created, and never stepped: the bug
    apt.install(rec.run)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
    rec.close()
    assert rec.facts["pending_loss_calls"] == 32
    assert len(rec.metrics["loss"]) == 40 - 32 + 1  # then each loss call is a step: the flat loss shows


def test_a_hand_written_update_loop_is_no_missing_step(rec):
    x, y = blobs(n=64)
    model = mlp()
    apt.install(rec.run)
    for _ in range(40):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
    rec.close()
    assert "pending_loss_calls" not in rec.facts


def test_activation_functions_inside_forward_are_measured_once(rec):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(10, 16)
            self.fc2 = nn.Linear(16, 16)
            self.act = nn.ReLU()  # a module: its hook measures it, the functional pass must not count it again
            self.block = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
            self.out = nn.Linear(16, 3)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            h = self.act(torch.sigmoid(self.fc2(h)))
            h = self.block(h).relu()
            return self.out(h)

    x, y = blobs()
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    apt.install(rec.run, every=1)
    expected = []
    for i in range(0, 96, 32):
        expected.append((F.relu(model.fc1(x[i : i + 32])) == 0).float().mean().item())
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    rec.close()
    acts = {k for k in rec.metrics if k.startswith(("act_zero/", "act_sat/"))}
    assert acts == {"act_zero/relu", "act_sat/sigmoid", "act_zero/act", "act_sat/block.1", "act_zero/relu#1"}
    assert rec.series("act_zero/relu") == pytest.approx(expected)


def test_framework_given_epochs_override_loader_exhaustion(rec):
    x, y = blobs(n=96)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = apt.install(rec.run)
    probe.hand_over(epochs=True, stop=False)  # what the Lightning and HF callbacks do (integration.py)
    for epoch in range(2):
        probe.set_epoch(epoch * 10)  # the framework's numbering, whatever the loader does
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    rec.close()
    assert rec.series("epoch") == [0, 0, 0, 10, 10, 10]
    assert rec.facts["epoch_steps"] == 3


def test_update_ratio_of_a_model_larger_than_the_copy_budget_goes_round_robin(rec, monkeypatch):
    from accmon.probe.torch import optwatch

    monkeypatch.setattr(optwatch, "UPDATE_BYTES", 4300)  # room for the 32x32 layer (4224 bytes), not for two layers
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = blobs()
    apt.install(rec.run, every=1)
    for i in range(0, 192, 32):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    rec.close()
    assert sorted(rec.metrics["update_ratio/0"]) == [0, 3]  # three slices, one per step, in turn
    assert sorted(rec.metrics["update_ratio/2"]) == [1, 4]
    assert sorted(rec.metrics["update_ratio/4"]) == [2, 5]
    assert len(rec.metrics["update_ratio"]) == 6 and all(0 < v < 1 for v in rec.series("update_ratio"))


def test_slow_steps_leave_when_the_next_step_begins_and_validation_keeps_its_step(rec):
    """A step that takes longer than the flush interval is handed to the run as soon as the next training
    forward begins — not a whole (long) step later — and a validation pass between the two still joins it."""
    import time

    from accmon.probe.torch import hooks
    from accmon.probe.torch.probe import TorchProbe

    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = hooks.attach(TorchProbe(rec.run, every=1, flush_s=0.02))
    handed = []
    for _step in range(6):
        model.train()
        out = model(x[:32])
        handed.append(rec.run.step)  # the last step the run has, while this one is under way
        loss = F.cross_entropy(out, y[:32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        time.sleep(0.05)  # a slow step: well over flush_s
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(x[32:64]), y[32:64])
    assert probe.cadence.step_time > probe.flush_s
    assert handed[2:] == [1, 2, 3, 4]  # once steps are known to be slow: the previous one, at once
    rec.close()
    assert sorted(rec.metrics["val_loss"]) == list(range(6))  # each validation on the step it followed
    assert sorted(rec.metrics["loss"]) == list(range(6))


def test_fast_steps_keep_the_last_row_back_for_a_validation_pass(rec):
    from accmon.probe.torch import hooks
    from accmon.probe.torch.probe import TorchProbe

    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hooks.attach(TorchProbe(rec.run, every=1, flush_s=0.0001))
    for step in range(20):
        model.train()
        loss = F.cross_entropy(model(x[:32]), y[:32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert rec.run.step < step  # the newest row waits: a validation pass may follow it
        if step % 5 == 4:
            model.eval()
            with torch.no_grad():
                F.cross_entropy(model(x[32:64]), y[32:64])
    rec.close()
    assert sorted(rec.metrics["val_loss"]) == [4, 9, 14, 19]
