"""Issue 15 item 6: a diagnosis does not depend on the machine it ran on.

Without ACCMON_EVERY the probe samples per-layer statistics at steps that are a function of the step number only
(probe/torch/cadence.py), and the rules look at the run at fixed steps whatever the frames' cuts (frames are cut by
wall time). The same seeded loop, run on an idle machine and beside a real load generator, and run with frames cut
every step or once at the end, samples the same steps, is looked at by the rules at the same steps and raises the
same alerts at the same steps.
"""

import subprocess
import sys
from contextlib import contextmanager

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.rules import Diagnoser  # noqa: E402
from accmon.probe.rules.base import Rule  # noqa: E402
from accmon.probe.rules.catalogue import all_rules  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from accmon.probe.torch.cadence import interval_at  # noqa: E402
from tests.conftest import read_frames  # noqa: E402

STEPS = 300


class Looks(Rule):
    """A spy: notes every step the rules are evaluated at, finds nothing."""

    ids = ()

    def __init__(self) -> None:
        self.points: list[int] = []

    def check(self, st, h):
        self.points.append(h.now)
        return ()


@contextmanager
def busy(workers: int = 2):
    """Real load for the duration: processes that spin on a core each, started before the block runs."""
    code = "import sys\nprint('spinning', flush=True)\nwhile True:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(workers)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == b"spinning"
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def train(path: str, flush_s: float | None = None) -> list[dict]:
    """A seeded run whose learning rate is far too high (alerts to compare), at the probe's own schedule."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        centres = torch.randn(4, 16, generator=g) * 2
        y = torch.randint(0, 4, (STEPS * 32,), generator=g)
        x = centres[y] + torch.randn(STEPS * 32, 16, generator=g)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
        opt = torch.optim.SGD(model.parameters(), lr=2.0, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        run = Run("schedule", record=path, rules=False)
        try:
            probe = apt.install(run)
            if flush_s is not None:
                probe.flush_s = flush_s
            for i in range(STEPS):
                opt.zero_grad()
                loss_fn(model(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32]).backward()
                opt.step()
        finally:
            apt.uninstall()
            run.close()
    finally:
        torch.set_num_threads(threads)
    return read_frames(path)


def sampled_steps(frames: list[dict]) -> list[int]:
    out = []
    for f in frames:
        if f["kind"] == "steps":
            col = f["cols"].get("grad_norm/0")
            if col is not None:
                out += [s for s, v in zip(f["steps"], col) if v is not None]
    return out


def diagnose(frames: list[dict]) -> tuple[list[int], list[tuple]]:
    spy = Looks()
    d = Diagnoser(rules=[*all_rules(), spy])
    for f in frames:
        d.observe(f)
    alerts = [(a["id"], a.get("cause"), a["severity"], a["step"], a["cleared_step"]) for a in d.alerts()]
    # Facts frames that come before any step are looked at, at step 0, as they come (the set-up's static faults
    # speak at once): how many there are is a matter of timing, what they see (no step) is not.
    return sorted(set(spy.points)), alerts


def test_an_idle_and_a_loaded_machine_sample_the_same_steps_and_raise_the_same_alerts(tmp_path):
    idle = train(str(tmp_path / "idle.accmon"))
    with busy():
        loaded = train(str(tmp_path / "loaded.accmon"))
    steps = sampled_steps(idle)
    assert steps == sampled_steps(loaded)
    assert steps[:8] == list(range(8)) and all(s % interval_at(s) == 0 for s in steps)
    points, alerts = diagnose(idle)
    assert {a[0] for a in alerts} >= {"lr_too_high"}, alerts
    assert diagnose(loaded) == (points, alerts)


def test_frames_cut_every_step_or_once_give_the_rules_the_same_steps_and_verdicts(tmp_path):
    many = train(str(tmp_path / "many.accmon"), flush_s=1e-9)  # a frame per step (a slow machine, or slow steps)
    one = train(str(tmp_path / "one.accmon"), flush_s=1e9)  # every step in the frames of the run's end
    assert sum(f["kind"] == "steps" for f in many) > 100 and sum(f["kind"] == "steps" for f in one) <= 2
    assert sampled_steps(many) == sampled_steps(one)
    points, alerts = diagnose(many)
    assert alerts
    assert diagnose(one) == (points, alerts)
