"""Issue 15 item 1: what starts a new phase of training under one optimizer, on real small loops.

A parameter group added to the optimizer (a replaced head, `opt.add_param_group`), parameters that first
receive a gradient (a layer unfrozen), a new training loss (another callable, or a loss module configured
otherwise) and a new data source each start a phase (the `phases` fact); what only looks like one does not: a
loss module built afresh every step, an auxiliary loss beside the main one, a data set rebuilt every epoch.
"""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from tests.conftest import read_frames  # noqa: E402
from tests.probe.test_torch_probe import blobs, mlp, rec  # noqa: E402, F401 (rec: the fixture)


def _train(model, opt, loss_fn, x, y, steps, start=0):
    for i in range(start, start + steps):
        j = (i * 32) % (len(x) - 32)
        opt.zero_grad()
        loss_fn(model(x[j:j + 32]), y[j:j + 32]).backward()
        opt.step()


def _phases(rec):
    return [(p["start"], p["why"]) for p in rec.facts.get("phases", [])]


def test_a_head_replaced_and_added_to_the_same_optimizer_starts_a_phase(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    _train(model, opt, loss_fn, x, y, 10)  # steps 0-9
    model[-1] = nn.Linear(32, 3)
    opt.add_param_group({"params": model[-1].parameters(), "lr": 1e-2})
    _train(model, opt, loss_fn, x, y, 10)  # steps 10-19
    rec.close()
    phases = _phases(rec)
    assert [s for s, _ in phases] == [10], phases
    assert "parameter group" in phases[0][1]
    # The optimizer facts were taken again: it now has two groups.
    assert len(rec.facts["optimizer"][0]["param_groups"]) == 2
    assert len(rec.metrics["loss"]) == 20


def test_a_layer_unfrozen_under_the_same_optimizer_starts_a_phase(rec):
    x, y = blobs()
    model = mlp()
    for p in model[0].parameters():  # the body frozen: only the head trains at first
        p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=1)
    _train(model, opt, loss_fn, x, y, 12)  # steps 0-11
    for p in model[0].parameters():
        p.requires_grad_(True)
    _train(model, opt, loss_fn, x, y, 6)  # steps 12-17
    rec.close()
    phases = _phases(rec)
    assert [s for s, _ in phases] == [12], phases
    assert "no gradient" in phases[0][1]


def test_a_new_loss_from_a_step_on_starts_a_phase_and_is_the_runs_loss(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = apt.install(rec.run, every=1)
    probe.flush_s = 1e9  # every row comes home at the end: the first loss's facts after the new loss took over
    _train(model, opt, nn.MSELoss(), x, x[:, :3], 10)  # steps 0-9: a regression objective (continuous targets)
    expected = []
    ce = nn.CrossEntropyLoss()
    for i in range(10, 20):  # steps 10-19: the task's own loss
        j = (i * 32) % (len(x) - 32)
        opt.zero_grad()
        loss = ce(model(x[j:j + 32]), y[j:j + 32])
        expected.append(float(loss.detach()))
        loss.backward()
        opt.step()
    rec.close()
    phases = _phases(rec)
    assert [s for s, _ in phases] == [10], phases
    assert "CrossEntropyLoss" in phases[0][1]
    # The new loss is the run's loss once it has been seen for two steps, and its facts replace the old ones.
    assert [rec.metrics["loss"][s] for s in range(12, 20)] == pytest.approx(expected[2:], rel=1e-5)
    assert rec.facts["loss"]["kind"] == "CrossEntropyLoss" and rec.facts["task"] == "multiclass"
    # The regression targets' facts came home with a flush after the new loss took over: they are not read as the
    # new loss's targets (continuous "class ids" would be a label_issue).
    known: dict = {}
    for f in read_frames(rec.path):
        if f["kind"] == "facts":
            known.update(f["facts"])
            if known.get("loss", {}).get("kind") == "CrossEntropyLoss":
                assert known["targets"].get("integral", True), known["targets"]


def test_class_weights_added_to_the_loss_start_a_phase(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    apt.install(rec.run, every=1)
    _train(model, opt, nn.CrossEntropyLoss(), x, y, 8)
    _train(model, opt, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0])), x, y, 8, start=8)
    rec.close()
    assert [s for s, _ in _phases(rec)] == [8]
    assert rec.facts["loss"]["class_weights"] == [1.0, 2.0, 3.0]


def test_what_only_looks_like_a_new_phase_starts_none(rec):
    x, y = blobs(n=320)
    model = mlp()
    head = nn.Linear(10, 3)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    apt.install(rec.run, every=1)
    for epoch in range(3):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        # The data set rebuilt every epoch (shuffled by hand): the same data drawn again.
        loader = DataLoader(TensorDataset(x[perm], y[perm]), batch_size=32)
        for xb, yb in loader:
            opt.zero_grad()
            # A loss module built afresh every step, and an auxiliary loss on a second head beside it.
            loss = nn.CrossEntropyLoss()(model(xb), yb) + 0.1 * nn.functional.mse_loss(head(xb), yb.float()[:, None].expand(-1, 3))
            loss.backward()
            opt.step()
    rec.close()
    assert _phases(rec) == []
    assert len(rec.metrics["loss"]) == 30
    assert rec.facts["loss"]["kind"] == "CrossEntropyLoss"


def test_a_module_replaced_and_not_given_to_the_optimizer_starts_a_phase_and_retakes_the_facts(rec):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    apt.install(rec.run, every=16)  # the look is at fixed steps (multiples of 8), whatever the cadence
    _train(model, opt, loss_fn, x, y, 12)  # steps 0-11
    assert rec.run is not None
    for p in model.parameters():
        p.requires_grad_(False)
    model[-1] = nn.Linear(32, 3)  # the bug: the old optimizer keeps the frozen body and the old head
    _train(model, opt, loss_fn, x, y, 12, start=12)  # steps 12-23
    rec.close()
    phases = _phases(rec)
    assert [s for s, _ in phases] == [16], phases
    assert "no longer receive" in phases[0][1]
    assert rec.facts["optimizer"][0]["covers_model"] == 0.0  # taken again: the trainable head is not in it
