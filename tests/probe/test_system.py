"""Issue 19: where a step's time goes and the memory beside it, measured by real loops; the four alerts judged by
the real rules engine on real runs (data wait, RSS, a real leak) and on frames (throughput, a nearly full GPU)."""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.rules.diagnoser import Diagnoser  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from accmon.probe.system import Statm, SystemStats, rss_bytes  # noqa: E402
from tests.conftest import read_frames  # noqa: E402

MB = 1024 * 1024


class Recording:
    """A real run with its rules on, recorded; after `close()` its columns by name and its alerts by id."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.run = Run("system-test", record=self.path)
        self.cols: dict[str, dict[int, float]] = {}
        self.alerts: dict[str, dict] = {}

    def close(self) -> None:
        apt.uninstall()
        self.run.close()
        for f in read_frames(self.path):
            if f["kind"] == "steps":
                for name, values in f["cols"].items():
                    col = self.cols.setdefault(name, {})
                    for s, v in zip(f["steps"], list(values)):
                        if v is not None:
                            col[s] = v
            elif f["kind"] == "alert":
                self.alerts[f["alert"]["id"]] = f["alert"]


@pytest.fixture
def recording(tmp_path):
    r = Recording(tmp_path / "run.accmon")
    yield r
    apt.uninstall()
    if not r.run.closed:
        r.run.close()


def _model(d: int = 16, hidden: int = 32, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def _train(model: nn.Module, loader, epochs: int, *, keep=None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if keep is not None:
                keep(loss)


def _blobs(n: int, d: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(3, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g)
    return TensorDataset(x, y)


class SlowToLoad(Dataset):
    """A dataset whose batches take a fixed time to produce: decoding on the main process, no workers."""

    def __init__(self, base: TensorDataset, seconds_per_item: float) -> None:
        self.base, self.seconds = base, seconds_per_item

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        time.sleep(self.seconds)
        return self.base[i]


@pytest.fixture
def one_thread():
    # A tiny model on one thread: with two, a busy machine makes OpenMP's spinning threads, not the model, the
    # cost of a step.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_slow_loader_is_data_wait_and_input_bound(recording, one_thread):
    apt.install(recording.run, every=16)
    # 40 ms to make a batch, against well under a millisecond of compute: input-bound on any machine.
    loader = DataLoader(SlowToLoad(_blobs(130 * 4), 0.010), batch_size=4)
    _train(_model(), loader, epochs=1)  # 130 steps
    recording.close()
    wait, step = recording.cols["data_wait"], recording.cols["step_time"]
    assert len(wait) == 129 and set(wait) <= set(step)
    assert all(wait[s] >= 0.040 for s in wait)  # each batch's sleep is in its step's wait
    assert statistics.median(wait[s] / step[s] for s in wait) > 0.5
    alert = recording.alerts["input_bound"]
    assert alert["severity"] == "info" and "num_workers" in alert["fix"]
    assert "DataLoader.__next__" in alert["message"]


def test_batches_already_in_memory_are_not_input_bound(recording, one_thread):
    apt.install(recording.run, every=16)
    _train(_model(), DataLoader(_blobs(520), batch_size=4), epochs=1)
    recording.close()
    assert len(recording.cols["data_wait"]) == 129
    assert "input_bound" not in recording.alerts


def test_rss_joins_every_tenth_step_and_samples_per_second_every_step(recording):
    apt.install(recording.run, every=4)
    _train(_model(), DataLoader(_blobs(320), batch_size=8), epochs=2)  # 80 steps
    recording.close()
    rss = recording.cols["rss"]
    assert set(range(0, 80, 10)) <= set(rss)
    own = rss_bytes()
    assert own is not None and all(0.2 * own < v < 5 * own for v in rss.values())  # this very process
    assert len(recording.cols["samples_per_s"]) == 79  # every step after the first
    assert "cuda_allocated/0" not in recording.cols  # CPU only: host figures, and no device pretended


def test_the_explicit_api_gets_the_same_memory_figures(tmp_path):
    run = Run("explicit", record=str(tmp_path / "r.accmon"), rules=False)
    for step in range(35):
        run.log(step, loss=1.0 / (step + 1))
    run.close()
    steps = sorted(s for f in read_frames(tmp_path / "r.accmon") if f["kind"] == "steps"
                   for s, v in zip(f["steps"], list(f["cols"].get("rss", []))) if v is not None)
    assert {0, 10, 20, 30} <= set(steps)


def _big(seed: int = 0) -> tuple[nn.Module, TensorDataset]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 3)), _blobs(40 * 256, d=256, seed=seed)


def test_a_graph_kept_alive_by_running_loss_is_memory_growth(recording, one_thread):
    # The classic leak: `running_loss += loss` on a loss no backward() frees (a held-out batch checked with
    # gradients on) keeps every call's graph and its activations alive: ~2 MB a step here.
    apt.install(recording.run, every=16)
    model, data = _big()
    held_out = _blobs(256, d=256, seed=1).tensors
    running = torch.zeros(())

    def keep(loss):
        nonlocal running
        running = running + nn.functional.cross_entropy(model(held_out[0]), held_out[1])

    _train(model, DataLoader(data, batch_size=256, shuffle=True), epochs=5, keep=keep)  # 200 steps
    recording.close()
    del running
    alert = recording.alerts["memory_growth"]
    assert alert["severity"] == "warning" and alert["cause"] == "host"
    assert "running_loss += loss" in alert["fix"] and "no_grad" in alert["fix"]
    assert alert["evidence"]["to_bytes"] - alert["evidence"]["from_bytes"] >= 64 * MB
    assert alert["evidence"]["from_step"] >= 40  # judged past the first epoch (a dataset cache would fill there)


def test_memory_that_rises_once_then_stays_is_not_growth(recording, one_thread):
    apt.install(recording.run, every=16)
    model, data = _big()
    held_out = _blobs(256, d=256, seed=1).tensors
    ballast: list[torch.Tensor] = []
    running = 0.0
    steps = 0

    def keep(loss):
        nonlocal running, steps
        with torch.no_grad():  # the right way: no graph, and a number
            running += nn.functional.cross_entropy(model(held_out[0]), held_out[1]).item()
        steps += 1
        if steps == 90:
            ballast.append(torch.ones(300 * MB // 4))  # a cache filled once, 300 MB, kept to the end

    _train(model, DataLoader(data, batch_size=256, shuffle=True), epochs=5, keep=keep)
    recording.close()
    assert ballast and "memory_growth" not in recording.alerts


# ---- the rules on frames: what needs minutes or a GPU to happen for real -----------------------------------

def _steps_frame(steps: list[int], **cols: list) -> dict:
    return {"kind": "steps", "rank": 0, "steps": steps, "cols": cols}


def _feed(d: Diagnoser, step_times: list[float], start: int = 0, chunk: int = 64) -> list[dict]:
    out = []
    for i in range(0, len(step_times), chunk):
        part = step_times[i:i + chunk]
        out += d.observe(_steps_frame(list(range(start + i, start + i + len(part))), step_time=part))
    return out


def test_steps_twice_as_slow_for_minutes_are_a_throughput_drop():
    d = Diagnoser()
    before = [0.05 + 0.01 * ((i * 7) % 5) for i in range(1200)]  # 1 minute at ~15 steps/s
    assert not [a for a in _feed(d, before) if a["id"] == "throughput_drop"]
    alerts = [a for a in _feed(d, [0.25] * 200, start=1200) if a["id"] == "throughput_drop"]
    assert alerts and alerts[0]["severity"] == "info" and alerts[0]["evidence"]["slower"] >= 2


def test_validation_spikes_and_a_busy_minute_are_not_a_throughput_drop():
    d = Diagnoser()
    # Every 100th step runs a 3 s evaluation; steps are 50 ms otherwise; then 20 s of a busy machine.
    times = [3.0 if i % 100 == 99 else 0.05 for i in range(1500)]
    times[1300:1400] = [0.2] * 100
    assert not [a for a in _feed(d, times) if a["id"] == "throughput_drop"]


def test_a_short_run_never_judges_throughput():
    d = Diagnoser()
    assert not [a for a in _feed(d, [0.001] * 1100 + [0.01] * 200) if a["id"] == "throughput_drop"]


def test_a_run_that_ends_between_two_looks_is_still_judged_input_bound():
    # 128 steps (0-127) of 40 ms, 35 of them waiting: the machine rules look every 32nd step, and at step 96 the
    # window still reaches into the warm-up. The end of the run is a look of its own.
    d = Diagnoser()
    steps = list(range(128))
    alerts = d.observe(_steps_frame(steps, step_time=[0.040] * 128, data_wait=[0.035] * 128))
    assert not [a for a in alerts if a["id"] == "input_bound"]
    alerts = d.observe({"kind": "end", "rank": 0, "status": "finished", "total_steps": 128})
    alert = next(a for a in alerts if a["id"] == "input_bound")
    assert alert["step"] == 127 and alert["evidence"]["wait_share"] == pytest.approx(0.875)


def test_reserved_memory_near_the_device_total_is_near_oom():
    d = Diagnoser()
    total = 80 * 1024 * MB
    d.observe({"kind": "facts", "rank": 0, "facts": {"devices": {"0": {"name": "H100", "total": total}}}})
    quiet = d.observe(_steps_frame(list(range(0, 100, 10)), **{"cuda_reserved/0": [0.6 * total] * 10}))
    assert not [a for a in quiet if a["id"] == "near_oom"]
    full = d.observe(_steps_frame(list(range(100, 200, 10)), **{"cuda_reserved/0": [0.97 * total] * 10,
                                                               "cuda_max_allocated/0": [0.93 * total] * 10}))
    alert = next(a for a in full if a["id"] == "near_oom")
    assert alert["cause"] == "cuda:0" and "97%" in alert["message"] and alert["evidence"]["name"] == "H100"
    again = d.observe(_steps_frame(list(range(200, 300, 10)), **{"cuda_reserved/0": [0.5 * total] * 10}))
    assert any(a["id"] == "near_oom" and a["state"] == "cleared" for a in again)


def test_without_nvml_or_cuda_the_figures_are_the_host_ones():
    stats = SystemStats()
    stats.nvml.watch({0: None})  # as if CUDA had named a device: NVML is looked for, and is absent here
    stats.poll()
    sample = stats.sample()
    assert set(sample) == {"rss"} and stats.facts() is None
    assert stats.due(20, 0.0) and not stats.due(21, 0.0)
    stats.close()


# ---- the descriptor the training thread reads ---------------------------------------------------------------
def _statm_fds() -> list[str]:
    """What this process's open descriptors on a statm file point at (/proc/<pid>/statm)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, gone
        if link.endswith("/statm"):
            links.append(link)
    return links


def test_the_kept_statm_reads_this_process_and_a_forked_child_reads_its_own():
    statm = Statm()
    try:
        here, fresh = statm.rss(), rss_bytes()
        assert here is not None and fresh is not None and 0.8 * fresh < here < 1.25 * fresh
        assert _statm_fds() == [f"/proc/{os.getpid()}/statm"]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what its inherited reader reads, and which file it reads it from
            try:
                got, fresh_here = statm.rss(), rss_bytes()
                os.write(write, json.dumps([got, fresh_here, _statm_fds()]).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            got, child_fresh, child_links = json.loads(f.read())
        os.waitpid(pid, 0)
        # Its own file, opened anew (the inherited descriptor, which reads the parent, closed), and its figure.
        assert child_links == [f"/proc/{pid}/statm"] and 0.9 * child_fresh < got < 1.1 * child_fresh
        assert 0.8 * here < statm.rss() < 1.25 * here  # the parent's reader still reads the parent
    finally:
        statm.close()
    assert not _statm_fds()


def test_a_closed_run_holds_no_statm_descriptor_and_opens_none_after(tmp_path):
    before = _statm_fds()
    run = Run("statm", record=str(tmp_path / "r.accmon"), rules=False)
    for step in range(25):
        run.log(step, loss=1.0)
    assert len(_statm_fds()) == len(before) + 1  # kept open while the run samples
    run.close()
    run.log(30, loss=1.0)  # after the end: dropped, and no figures read for it
    assert _statm_fds() == before
