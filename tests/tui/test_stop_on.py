"""`accmon run --stop-on` and `accmon.watch(..., stop_on=...)` (issue 18 item 1): a real run that goes NaN is
stopped at the next step boundary through its framework's own door, its Ctrl-C save path runs, the recording and
`check` say it was stopped by the alert, and `accmon run` exits 3."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ACCMON, read_frames, run_accmon, write_script

pytest.importorskip("torch")

# A plain PyTorch loop whose first layer turns NaN at step 30; it saves a checkpoint on Ctrl-C, as long runs do.
PLAIN = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from torch import nn, optim

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    out = os.environ["OUT"]
    step = -1
    try:
        for step in range(20000):
            x = torch.randn(32, 8)
            y = (x[:, 0] > 0).long()
            if step == 30:
                with torch.no_grad():
                    model[0].weight.fill_(float("nan"))
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            time.sleep(0.002)
        print("ran to the end")
    except KeyboardInterrupt as exc:
        torch.save(model.state_dict(), os.path.join(out, "last.pt"))
        with open(os.path.join(out, "stopped.txt"), "w") as fh:
            fh.write(f"{step} {type(exc).__name__}")
    """
)


def stopped_run(tmp_path, script: str, *args: str, stop_on: str = "nan_loss", env: dict | None = None):
    rec = tmp_path / "run.accmon"
    out = run_accmon("run", "--headless", "--stop-on", stop_on, "--record", str(rec), *args, "--", sys.executable,
                     script, env={**os.environ, "OUT": str(tmp_path), **(env or {})}, timeout=240)
    check = run_accmon("check", str(rec), "--json")
    return out, rec, json.loads(check.stdout), check


def test_plain_pytorch_stops_on_nan_and_saves(tmp_path):
    script = write_script(tmp_path, "train.py", PLAIN)
    out, rec, report, check = stopped_run(tmp_path, script)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "stopped by accmon: nan_loss" in out.stderr and "exit code 3" in out.stderr
    # The script's `except KeyboardInterrupt` ran: the checkpoint is there, and it was accmon's StopTraining.
    assert (tmp_path / "last.pt").exists()
    stop_step, kind = (tmp_path / "stopped.txt").read_text().split()
    assert kind == "StopTraining"
    run = report["run"]
    assert run["status"] == "finished"
    assert run["stopped"]["by"] == "alert" and run["stopped"]["alert"] == "nan_loss"
    assert run["stopped"]["reason"].startswith("nan_loss: ")
    assert run["stopped"]["step"] == int(stop_step)  # the step after which optimizer.step() raised
    # Stopped soon after the alert, never at the loop's end: the alert's step is the first NaN one.
    alert = next(a for a in report["alerts"] if a["id"] == "nan_loss")
    assert 30 <= alert["step"] <= int(stop_step) < 20000
    # What the alert said went out before the stop; nothing was trained after the step it stopped at.
    steps = [s for f in read_frames(rec) if f["kind"] == "steps" for s in f["steps"]]
    assert max(steps) == int(stop_step)
    text = run_accmon("check", str(rec))
    assert f"stopped by accmon: nan_loss at step {stop_step} (" in text.stdout


def test_uncaught_stop_is_not_a_users_ctrl_c(tmp_path):
    # A script that does not catch it: Python ends by SIGINT, as for a Ctrl-C; the run says accmon stopped it.
    script = write_script(tmp_path, "train.py", PLAIN.replace("except KeyboardInterrupt as exc:", "except ZeroDivisionError as exc:"))
    out, rec, report, _ = stopped_run(tmp_path, script, stop_on="critical")
    assert out.returncode == 3, out.stderr[-3000:]
    assert report["run"]["status"] == "finished"
    assert report["run"]["stopped"]["by"] == "alert", report["run"]
    assert not (tmp_path / "last.pt").exists()


def test_unknown_id_is_refused_before_the_command_starts(tmp_path):
    marker = tmp_path / "started"
    out = run_accmon("run", "--headless", "--stop-on", "nan_loss,nan_lose", "--", sys.executable, "-c",
                     f"open({str(marker)!r}, 'w')")
    assert out.returncode == 2
    assert "'nan_lose'" in out.stderr and "known ids:" in out.stderr and "lr_too_high" in out.stderr
    assert not marker.exists()


def test_explicit_api_watch_stop_on(tmp_path):
    script = write_script(tmp_path, "train.py", PLAIN.replace(
        "loss_fn = nn.CrossEntropyLoss()",
        "loss_fn = nn.CrossEntropyLoss()\n"
        "import accmon.probe as accmon\n"
        "try:\n"
        "    accmon.watch(model, opt, stop_on='nan_lose')\n"
        "except accmon.StopOnError as exc:\n"
        "    assert 'known ids' in str(exc)\n"
        "w = accmon.watch(model, opt, stop_on='nan_loss', record=os.path.join(os.environ['OUT'], 'api.accmon'))"))
    proc = subprocess.run([sys.executable, script], env={**os.environ, "OUT": str(tmp_path)}, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "last.pt").exists()
    stop_step = int((tmp_path / "stopped.txt").read_text().split()[0])
    report = json.loads(run_accmon("check", str(tmp_path / "api.accmon"), "--json").stdout)
    assert report["run"]["status"] == "finished"
    assert report["run"]["stopped"]["by"] == "alert" and report["run"]["stopped"]["step"] == stop_step


def test_a_users_ctrl_c_stays_the_users(tmp_path):
    # The same script with no alert to stop it and a real SIGINT it does not catch: by "user", as before.
    script = write_script(tmp_path, "train.py", PLAIN.replace("if step == 30:", "if step == -1:").replace(
        "except KeyboardInterrupt as exc:", "except ZeroDivisionError as exc:").replace(
        "time.sleep(0.002)", "time.sleep(0.002)\n        if step == 50: open(os.path.join(out, 'ready'), 'w')"))
    rec = tmp_path / "run.accmon"
    proc = subprocess.Popen([*ACCMON, "run", "--headless", "--stop-on", "nan_loss", "--record", str(rec), "--",
                             sys.executable, script], env={**os.environ, "OUT": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        import time

        while not (tmp_path / "ready").exists() and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 3, err[-3000:]
    report = json.loads(run_accmon("check", str(rec), "--json").stdout)
    assert report["run"]["stopped"]["by"] == "user"


DDP = textwrap.dedent(
    """
    import os, time
    import torch
    import torch.distributed as dist
    from torch import nn, optim
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(rank)
    out = os.environ["OUT"]
    step = -1
    try:
        for step in range(20000):
            x = torch.randn(32, 8, generator=g)
            if rank == 1 and step == 30:
                x[0, 0] = float("nan")  # one rank's batch: its loss first, every rank's weights a step later
            y = (x[:, 0] > 0).long()
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            time.sleep(0.002)
    except KeyboardInterrupt:
        torch.save(model.module.state_dict(), os.path.join(out, f"last.rank{rank}.pt"))
        with open(os.path.join(out, f"stopped.rank{rank}"), "w") as fh:
            fh.write(str(step))
    dist.destroy_process_group()
    """
)


def test_torchrun_every_rank_stops_at_the_same_step(tmp_path):
    from tests.tui.test_torchrun import torchrun

    script = write_script(tmp_path, "train_ddp.py", DDP)
    rec = tmp_path / "ddp.accmon"
    out = run_accmon("run", "--headless", "--stop-on", "nan_loss", "--record", str(rec), "--", torchrun(),
                     "--nproc_per_node=2", script, env={**os.environ, "OUT": str(tmp_path)}, timeout=240)
    assert out.returncode == 3, out.stderr[-4000:]
    # Both ranks left the loop by StopTraining, after the same step (no rank waits in an all-reduce for the
    # other), saved, and ended the process group together.
    steps = {r: int((tmp_path / f"stopped.rank{r}").read_text()) for r in (0, 1)}
    assert steps[0] == steps[1], steps
    assert all((tmp_path / f"last.rank{r}.pt").exists() for r in (0, 1))
    report = json.loads(run_accmon("check", str(rec), "--json").stdout)
    assert report["run"]["status"] == "finished" and report["run"]["ranks"] == [0, 1]
    ends = [f for f in read_frames(rec) if f["kind"] == "end"]
    assert sorted(f["rank"] for f in ends) == [0, 1]
    for f in ends:
        assert f["status"] == "finished" and f["stopped"]["by"] == "alert", f
        assert f["stopped"]["step"] == steps[0] and f["stopped"]["reason"].startswith("nan_loss: ")


def test_the_header_says_accmon_stopped_the_run_on_the_alert():
    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import QueueSource
    from tests.tui.test_app_fixtures import T0, frame, run, run_frames

    frames = run_frames(300, ended=None)
    seq = max(f["seq"] for f in frames) + 1
    frames.append(frame("end", seq, 299, status="finished", error=None, total_steps=300,
                        stopped={"by": "alert", "reason": "nan_loss: the training loss became NaN at step 280",
                                 "alert": "nan_loss", "alert_step": 280, "step": 299}))
    frames.append(frame("exit", seq + 1, 299, exit_code=1, signal=None))  # StopTraining left uncaught: exit 1

    async def go():
        src = QueueSource()
        src.push(*frames)
        app = AccmonApp(src, clock=lambda: T0 + 20.0)
        app.animation_level = "none"
        async with app.run_test(size=(160, 48)) as pilot:
            app.sync_now()
            await pilot.pause()
            text = app.screen_text()
            assert "stopped by accmon: nan_loss at step 299 (the training loss became NaN at step 280)" in text
            assert "crashed" not in text.splitlines()[0]
    run(go())
