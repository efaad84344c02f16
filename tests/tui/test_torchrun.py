"""`accmon run -- torchrun --nproc_per_node=2`: DDP with gloo on CPU, an unmodified script, one run with two ranks."""

import json
import os
import shutil
import sys
import textwrap

import pytest

from tests.conftest import all_steps, read_frames, run_accmon, write_script

pytest.importorskip("torch")

DDP = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    import torch.distributed as dist
    from torch import nn, optim
    from torch.nn.parallel import DistributedDataParallel

    die_at = int(os.environ.get("DIE_AT", "-1"))
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if die_at >= 0:
        # Preemption-aware, as long jobs are: SIGTERM (torchrun stopping the survivors) ends the script cleanly.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(rank)
    for step in range(int(os.environ.get("STEPS", "60"))):
        x = torch.randn(32, 8, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        if die_at >= 0:
            time.sleep(0.01)  # a step's worth of time, so that the probe's flushes (every 0.5 s) happen
        if step == die_at:
            if rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            # The survivor waits outside any collective until torchrun stops it, so what the report says does
            # not hang on which of gloo's error and torchrun's SIGTERM reaches it first.
            time.sleep(120)
    dist.destroy_process_group()
    """
)


def torchrun() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return path if os.path.exists(path) else shutil.which("torchrun")


def run_ddp(tmp_path, **env):
    script = write_script(tmp_path, "train_ddp.py", DDP)
    rec = tmp_path / "ddp.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", torchrun(), "--nproc_per_node=2", script,
                     env={**os.environ, **env}, timeout=240)
    report = json.loads(run_accmon("check", str(rec), "--json").stdout)
    return out, rec, report


def test_torchrun_two_ranks_are_one_run(tmp_path):
    # 200 steps: long enough to learn past the majority class (at 60 it still answered class 1 for 91% of a batch,
    # which single_class_prediction rightly says at the end of a run).
    out, rec, report = run_ddp(tmp_path, STEPS="200")
    assert out.returncode == 0, out.stderr
    run = report["run"]
    assert run["name"] == "train_ddp" and run["ranks"] == [0, 1] and run["status"] == "finished"
    assert run["steps"] == 200
    frames = read_frames(rec)
    for rank in (0, 1):
        assert all_steps(frames, rank) == list(range(200))
    losses = {r: [v for f in frames if f["kind"] == "steps" and f["rank"] == r for v in f["cols"]["loss"]] for r in (0, 1)}
    assert losses[0] != losses[1], "each rank reports the loss of its own batches"
    def grads(rank: int) -> dict[int, float]:  # step -> gradient norm, where the rank's cadence sampled one
        return {s: v for f in frames if f["kind"] == "steps" and f["rank"] == rank
                for s, v in zip(f["steps"], f["cols"].get("grad_norm", [None] * len(f["steps"]))) if v is not None}

    grad0, grad1 = grads(0), grads(1)
    # Each rank's cadence picks its own sampled steps (it follows that rank's timing): compare where both measured.
    both = [(grad0[s], grad1[s]) for s in sorted(grad0.keys() & grad1.keys())]
    assert len(both) >= 8  # at least the first steps, which every rank samples
    assert [a for a, _ in both] == pytest.approx([b for _, b in both], rel=1e-5), \
        "after DDP's all-reduce every rank holds the same gradients"
    assert [a for a in report["alerts"] if a["severity"] != "info"] == []


def test_a_killed_rank_is_named(tmp_path):
    out, rec, report = run_ddp(tmp_path, DIE_AT="150", STEPS="300")
    assert out.returncode != 0
    run = report["run"]
    assert run["status"] == "crashed"
    # Rank 0 ended (its end frame says how); rank 1 has none: it is the one named, whatever the timing.
    assert run["error"].startswith("rank 1 stopped without an end frame"), run["error"]
    frames = read_frames(rec)
    # Statistics wait on the device between flushes, so a SIGKILL loses at most the steps since the last one.
    rank1 = all_steps(frames, 1)
    assert rank1 and rank1 == list(range(len(rank1))) and rank1[-1] <= 150
    assert all_steps(frames, 0)[:len(rank1)] == rank1, "rank 0's frames are kept"
    assert any(a["id"] == "rank_stopped" and a["rank"] == 1 for a in report["alerts"])
