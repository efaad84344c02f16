"""Issue 19's System tab, header figures and `check`'s machine summary: a real CPU run recorded by the probe, and
the frames a GPU run sends (CUDA counters and the devices fact), through the real app and the real `check`."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from accmon.tui.app import AccmonApp  # noqa: E402
from accmon.tui.app_sources import ReplaySource  # noqa: E402
from accmon.tui.widgets import LineChart  # noqa: E402
from tests.conftest import run_accmon  # noqa: E402
from tests.tui.test_app_fixtures import T0, end, facts, frame, loaded, meta, run, run_frames, write_recording  # noqa: E402

GB = 1024**3


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> str:
    """A real training run on CPU, through a DataLoader, recorded by the probe (rules on)."""
    path = str(tmp_path_factory.mktemp("sys") / "cpu.accmon")
    run_ = Run("cpu-run", record=path)
    try:
        apt.install(run_, every=16)
        torch.manual_seed(0)
        x, y = torch.randn(512, 8), torch.randint(0, 2, (512,))
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            for xb, yb in DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
    finally:
        apt.uninstall()
        run_.close()
    return path


def _app(path: str) -> AccmonApp:
    app = AccmonApp(ReplaySource(path), clock=lambda: T0, refresh_s=3600)
    app.animation_level = "none"
    return app


async def system_tab(app: AccmonApp, pilot) -> str:
    """The whole recording loaded, the System tab shown (its key), and the screen's text."""
    await loaded(app, pilot)
    await pilot.press("6")
    app.sync_now()
    await pilot.pause()
    return app.screen_text()


def test_the_system_tab_shows_the_step_split_and_memory_of_a_cpu_run_and_says_there_is_no_gpu(cpu_run):
    async def go():
        app = _app(cpu_run)
        async with app.run_test(size=(160, 48)) as pilot:
            text = await system_tab(app, pilot)
            assert "6 System" in text and "waiting for data" in text and "samples/s" in text
            assert "No GPU in this run" in text
            assert "  mem " in text  # the header: the process's memory beside the step
            dots = {wid: app.query_one(f"#{wid}", LineChart).rendered().dots for wid in ("chart-time", "chart-mem")}
            assert dots["chart-time"].get("step", 0) > 0 and dots["chart-time"].get("data wait", 0) > 0
            assert dots["chart-mem"].get("process RSS", 0) > 0
    run(go())


def test_a_gpu_runs_memory_is_named_by_device_and_nvml_is_asked_for(tmp_path):
    frames = run_frames(300, per_frame=100, alerts=False, ended=None)
    gpu = [frame("facts", 900, 0, facts={"devices": {"0": {"name": "NVIDIA H100", "total": 80 * GB}}}),
           frame("steps", 901, 300, steps=[300, 310], cols={"cuda_allocated/0": [30.0 * GB, 31.0 * GB],
                                                             "cuda_reserved/0": [40.0 * GB, 40.0 * GB],
                                                             "cuda_allocated": [30.0 * GB, 31.0 * GB],
                                                             "step_time": [0.1, 0.1]})]

    async def go(path):
        app = _app(path)
        async with app.run_test(size=(160, 48)) as pilot:
            text = await system_tab(app, pilot)
            assert "GPU 0 (NVIDIA H100): peak 31 GB allocated, 40 GB reserved of 80 GB" in text
            assert "nvidia-ml-py" in text and "No GPU" not in text
    run(go(write_recording(tmp_path / "gpu.accmon", [*frames, *gpu, end(902, 310)])))


def test_check_json_gives_the_machine_summary(cpu_run):
    out = run_accmon("check", cpu_run, "--json")
    assert out.returncode in (0, 1), out.stderr
    system = json.loads(out.stdout)["run"]["system"]
    assert system["median_step_s"] > 0 and 0 <= system["data_wait_share"] <= 1
    assert system["median_samples_per_s"] > 0 and system["peak_rss_bytes"] > 50 * 1024**2
    assert system["devices"] == {}
    human = run_accmon("check", cpu_run)
    assert "machine: a step" in human.stdout and "waiting for data" in human.stdout


def test_a_recording_without_figures_has_no_machine_summary(tmp_path):
    path = write_recording(tmp_path / "old.accmon", [meta(), facts()])
    out = run_accmon("check", path, "--json")
    assert json.loads(out.stdout)["run"]["system"] is None
