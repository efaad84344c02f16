"""The framework callbacks' shared base (probe/integration.py) and the public interface it drives: the probe's
`hand_over`, `follow_epoch`, `facts_sent`, `measures`, and autorun's `when_imported`. A real run and a real
PyTorch loop stand in for a framework; the framework tests (test_keras_probe, test_lightning, test_hf,
test_stop_frameworks) cover the three callbacks themselves."""

import sys

import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402

from accmon.probe import autorun  # noqa: E402
from accmon.probe.integration import FrameworkCallback  # noqa: E402
from accmon.probe.stop import StopOnError  # noqa: E402
from tests.probe.test_torch_probe import blobs, mlp, rec  # noqa: E402, F401 (rec: the fixture)


class _Framework(FrameworkCallback):
    framework_name = "testframe"
    warn_prefix = "testframe"


def test_the_callback_base_checks_its_arguments():
    cb = _Framework()
    with pytest.raises(TypeError, match="accmon Run"):
        cb._configure(object(), None, None)
    for every in (0, 1.5):
        with pytest.raises(ValueError, match="positive"):
            cb._configure(None, every, None)
    with pytest.raises(StopOnError):
        cb._configure(None, None, "no_such_alert")


def test_the_callback_base_drives_the_probe_through_its_public_interface(rec):
    torch.manual_seed(0)
    cb = _Framework()
    cb._configure(rec.run, None, "nan_loss")
    cb._join(name=None, record=None, hooks=True, fallback="nothing")
    probe = cb.probe
    assert cb.run is rec.run and rec.run.stop_on is not None  # the callback's stop_on is the run's
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for i, epoch in enumerate([0, 0, 1, 1]):
        cb._set_epoch(epoch, changes_only=True)  # every step, as the HF callback does
        opt.zero_grad()
        F.cross_entropy(model(x[i * 32 : (i + 1) * 32]), y[i * 32 : (i + 1) * 32]).backward()
        if i == 2:
            rec.run.request_stop({"by": "viewer", "reason": "a test"})
        opt.step()  # handed over: the probe raises no StopTraining here, the framework's door opens
        cb._say_framework()
    assert probe.epoch_start == 2  # set when epoch 1 began, not again on each step of it
    assert cb._not_measured({"loss": 1.0, "acc": 0.5, "f1": 0.25}) == {"f1": 0.25}
    assert cb._stop_now(probe.step) and not cb._stop_now(probe.step)  # honoured once
    rec.close()
    assert rec.series("epoch") == [0, 0, 1, 1]
    assert rec.facts["epoch_steps"] == 2
    assert rec.facts["framework"] == "testframe"  # sent after the probe's own ("torch")
    assert rec.end["stopped"]["by"] == "viewer" and rec.end["stopped"]["step"] == 3


def test_when_imported_calls_back_once_right_after_the_first_import(tmp_path, monkeypatch):
    name = "accmon_when_imported_sample"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[str] = []
    before = list(sys.meta_path)
    try:
        autorun.when_imported(name, seen.append)
        autorun.when_imported(name, seen.append)  # already watched: no second watch
        assert seen == [] and len(sys.meta_path) == len(before) + 1
        __import__(name)
        assert seen == [name]
        autorun.when_imported(name, seen.append)  # imported already: at once
        assert seen == [name, name]
    finally:
        sys.meta_path[:] = before
        sys.modules.pop(name, None)
