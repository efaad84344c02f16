"""`accmon run -- python train.py` on unmodified PyTorch scripts: the probe finds everything by itself,
and the recording keeps every step when the script crashes, exits early or uses worker processes."""

import textwrap

import pytest

pytest.importorskip("torch")

from tests.conftest import read_frames, run_accmon, write_script  # noqa: E402

TRAIN = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(512, 20)
    y = (x[:, 0] + x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32, shuffle=True,
                       num_workers=int(os.environ.get("WORKERS", "0")),
                       multiprocessing_context=os.environ.get("MP_CONTEXT") or None)
    val = DataLoader(TensorDataset(x[384:], y[384:]), batch_size=64)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    stop = os.environ.get("STOP")
    step = 0
    for epoch in range(3) if __name__ == "__main__" else ():  # spawned workers import this script
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()
            if stop == "crash" and step == 20:
                raise RuntimeError("boom at step 20")
            if stop == "exit" and step == 20:
                sys.exit(3)
            step += 1
        model.eval()
        with torch.no_grad():
            for xb, yb in val:
                criterion(model(xb), yb)
    if __name__ == "__main__":
        print("trained", step)
    """
)


def record(tmp_path, **env):
    import os

    script = write_script(tmp_path, "train.py", TRAIN)
    rec = tmp_path / "run.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", __import__("sys").executable, script,
                     env={**os.environ, **env}, timeout=180)
    frames = read_frames(rec)
    metrics: dict[str, dict[int, float]] = {}
    facts: dict = {}
    end = None
    for f in frames:
        if f["kind"] == "steps":
            for name, values in f["cols"].items():
                for s, v in zip(f["steps"], values):
                    if v is not None:
                        metrics.setdefault(name, {})[s] = v
        elif f["kind"] == "facts":
            facts.update(f["facts"])
        elif f["kind"] == "end":
            end = f
    return out, metrics, facts, end


def test_unmodified_script_is_fully_instrumented(tmp_path):
    out, metrics, facts, end = record(tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(metrics["loss"]) == list(range(36))
    assert len(metrics["acc"]) == 36
    assert sorted(metrics["val_loss"]) == [11, 23, 35] and len(metrics["val_acc"]) == 3
    assert [metrics["epoch"][s] for s in (0, 11, 12, 35)] == [0, 0, 1, 2]
    for name in ("grad_norm", "grad_norm/0", "lr", "step_time", "samples_per_s", "input_mean", "act_zero/1"):
        assert name in metrics, name
    assert facts["framework"] == "torch" and facts["task"] == "multiclass" and facts["shuffled"] is True
    assert facts["epoch_steps"] == 12 and facts["loss"]["kind"] == "CrossEntropyLoss"
    assert facts["optimizer"][0]["kind"] == "SGD"
    assert end["status"] == "finished"
    assert metrics["acc"][35] > 0.8  # the data is separable: it learned, and the accuracy says so


def test_crash_keeps_every_step_and_says_crashed(tmp_path):
    out, metrics, facts, end = record(tmp_path, STOP="crash")
    assert out.returncode != 0
    assert "boom at step 20" in out.stderr
    assert sorted(metrics["loss"]) == list(range(21))
    assert end["status"] == "crashed" and "boom at step 20" in (end["error"] or "")


def test_sys_exit_keeps_every_step(tmp_path):
    out, metrics, facts, end = record(tmp_path, STOP="exit")
    assert out.returncode == 3
    assert sorted(metrics["loss"]) == list(range(21))
    assert end is not None


def test_dataloader_worker_processes(tmp_path):
    out, metrics, facts, end = record(tmp_path, WORKERS="2")
    assert out.returncode == 0, out.stderr
    assert sorted(metrics["loss"]) == list(range(36))
    assert [metrics["epoch"][s] for s in (0, 12, 35)] == [0, 1, 2]
    assert "internal error" not in out.stderr and "could not" not in out.stderr  # no probe complaint


def test_spawned_dataloader_workers_start_no_run_of_their_own(tmp_path):
    """Workers started by the spawn method import torch in a fresh interpreter: they must not each start a
    run (which would write into the same recording)."""
    import json

    out, metrics, facts, end = record(tmp_path, WORKERS="2", MP_CONTEXT="spawn")
    assert out.returncode == 0, out.stderr
    assert sorted(metrics["loss"]) == list(range(36))
    frames = read_frames(tmp_path / "run.accmon")
    assert sum(1 for f in frames if f["kind"] == "meta") == 1
    report = json.loads(run_accmon("check", str(tmp_path / "run.accmon"), "--json").stdout)
    assert report["run"]["problems"] == [] and report["run"]["ranks"] == [0]
