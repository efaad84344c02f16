"""Issue 15, measured wrong: gradient norms before clipping, and evaluation passes that are told apart."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from tests.probe.test_torch_probe import blobs, mlp, rec  # noqa: E402, F401 (rec: the fixture)


def test_clip_grad_norm_records_the_norm_before_clipping_and_how_often_it_engages(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    returned = []
    for i in range(0, 256, 32):
        opt.zero_grad()
        loss = loss_fn(model(x[i:i + 32]) * 50, y[i:i + 32])  # large logits: large gradients
        loss.backward()
        returned.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
        opt.step()
    rec.close()
    pre = rec.series("grad_norm_preclip")
    assert pre == pytest.approx(returned, rel=1e-5)
    assert all(g <= 0.5 + 1e-4 for g in rec.series("grad_norm"))  # what the optimizer saw: clipped
    assert rec.series("clip_frac") == [1.0 if r > 0.5 else 0.0 for r in returned]
    assert rec.facts["clip_max_norm"] == 0.5


def test_train_split_evaluation_is_not_averaged_into_val_loss(rec):
    x, y = blobs(n=384)
    train_ds, val_ds = TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:])
    train = DataLoader(train_ds, batch_size=32, shuffle=True)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    own = []
    for _ in range(2):
        for xb, yb in train:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        with torch.no_grad():  # estimate_loss: the training split, then the validation split
            means = {}
            for name, ds in (("train", train_ds), ("val", val_ds)):
                tot = n = 0.0
                for xb, yb in DataLoader(ds, batch_size=64):
                    tot += float(loss_fn(model(xb), yb)) * len(yb)
                    n += len(yb)
                means[name] = tot / n
            own.append(means)
    rec.close()
    assert rec.series("val_loss") == pytest.approx([m["val"] for m in own], rel=1e-5)
    assert rec.series("train_eval_loss") == pytest.approx([m["train"] for m in own], rel=1e-5)
    assert len(rec.series("train_eval_acc")) == 2


def test_evaluation_from_tensors_after_a_loader_epoch_is_validation(rec):
    x, y = blobs(n=320)
    train = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32, shuffle=True)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    for xb, yb in train:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    with torch.no_grad():
        own = float(loss_fn(model(x[256:]), y[256:]))
    rec.close()
    assert rec.series("val_loss") == pytest.approx([own], rel=1e-5)
    assert "train_eval_loss" not in rec.metrics


def test_estimate_loss_over_hand_drawn_batches_names_the_split(rec):
    # nanoGPT's estimate_loss: batches drawn by hand (no DataLoader), `for split in ['train', 'val']`.
    x, y = blobs(n=384)
    data = {"train": (x[:256], y[:256]), "val": (x[256:], y[256:])}
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    own = []
    for it in range(8):
        opt.zero_grad()
        loss_fn(model(x[it * 32:(it + 1) * 32]), y[it * 32:(it + 1) * 32]).backward()
        opt.step()
        if it % 4 == 3:
            with torch.no_grad():
                out = {}
                for split in ("train", "val"):
                    xs, ys = data[split]
                    out[split] = float(loss_fn(model(xs), ys))
                own.append(out)
    rec.close()
    assert rec.series("val_loss") == pytest.approx([o["val"] for o in own], rel=1e-5)
    assert rec.series("train_eval_loss") == pytest.approx([o["train"] for o in own], rel=1e-5)


@pytest.mark.parametrize("zero", ["never", "optimizer", "module", "set_none"])
def test_gradients_never_zeroed_are_a_fact(rec, zero):
    x, y = blobs(n=1280)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    for i in range(40):
        if zero == "optimizer":
            opt.zero_grad()
        elif zero == "module":
            model.zero_grad()
        elif zero == "set_none":
            for p in model.parameters():
                p.grad = None
        loss_fn(model(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32]).backward()
        opt.step()
    rec.close()
    if zero == "never":
        assert rec.facts["grads_not_zeroed"] == 32
    else:
        assert "grads_not_zeroed" not in rec.facts


def test_all_equal_weights_and_loss_class_weights_are_facts(rec):
    x, y = blobs()
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    for p in list(model[0].parameters()) + list(model[2].parameters()):
        nn.init.zeros_(p)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 4.0]), label_smoothing=0.1)
    apt.install(rec.run, every=1)
    for i in range(0, 128, 32):
        opt.zero_grad()
        loss_fn(model(x[i:i + 32]), y[i:i + 32]).backward()
        opt.step()
    rec.close()
    flags = {layer["name"]: layer.get("constant_weight") for layer in rec.facts["model"]["layers"]}
    assert flags["0"] is True and flags["2"] is True and flags["4"] is False
    assert rec.facts["loss"]["class_weights"] == [1.0, 2.0, 4.0] and rec.facts["loss"]["label_smoothing"] == 0.1


def test_a_new_optimizer_and_a_new_training_loader_start_phases(rec):
    x, y = blobs(n=480)
    first = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32, shuffle=True)
    # A data set of another size: one of the same kind and size is taken as the same data drawn again.
    second = DataLoader(TensorDataset(x[256:], y[256:]), batch_size=32, shuffle=True)
    model = mlp()
    pretrain = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    for xb, yb in first:  # steps 0-7
        pretrain.zero_grad()
        loss_fn(model(xb), yb).backward()
        pretrain.step()
    model[-1] = nn.Linear(32, 3)  # a new head, a new optimizer over it; the old one is still referenced
    finetune = torch.optim.Adam(model[-1].parameters(), lr=1e-2)
    for xb, yb in first:  # steps 8-15
        finetune.zero_grad()
        loss_fn(model(xb), yb).backward()
        finetune.step()
    for xb, yb in second:  # steps 16-22: new data
        finetune.zero_grad()
        loss_fn(model(xb), yb).backward()
        finetune.step()
    rec.close()
    # The new optimizer counts the steps from its second step on (its first, while the old optimizer may still
    # step too, joins the next row): 22 rows for 23 iterations.
    assert len(rec.metrics["loss"]) == 22
    starts = [(p["start"], p["why"]) for p in rec.facts["phases"]]
    assert [s for s, _ in starts] == [8, 15], starts
    assert "optimizer" in starts[0][1] and "data" in starts[1][1]


def test_evaluation_under_no_grad_in_training_mode_after_slow_steps_joins_the_last_step(rec):
    """Steps slower than the flush interval leave as soon as the next step begins. A forward under no_grad with the
    model still in training mode (no model.eval()) began a step too: the last step's row left, and the evaluation
    after it waited for a step that never came, lost at the run's end. A loaded suite run showed it, with the
    interval passing by chance; here every step is slower than an interval of zero."""
    x, y = blobs(n=320)
    train = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    apt.active().flush_s = 0.0
    own = []
    for _ in range(2):
        for xb, yb in train:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        with torch.no_grad():
            own.append(float(loss_fn(model(x[256:]), y[256:])))
    rec.close()
    assert rec.metrics["val_loss"] == pytest.approx({7: own[0], 15: own[1]}, rel=1e-5)  # each at its epoch's last step
