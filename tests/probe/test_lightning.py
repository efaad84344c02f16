"""PyTorch Lightning under accmon: a tiny LightningModule on CPU, trained for real in a subprocess.

Unmodified under `accmon run`, and with the explicit `AccmonCallback`. Lightning's own CSVLogger runs beside
accmon in every script: what Lightning logged at each global step is the reference accmon's steps must match.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import read_frames, run_accmon

pytest.importorskip("lightning", reason="the Lightning integration needs PyTorch Lightning (accmon[lightning])")

SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    {import_lightning}
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    MODE = sys.argv[1] if len(sys.argv) > 1 else "plain"

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.1, crash_at=None, custom_loss=False):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
            self.lr, self.crash_at, self.custom_loss = lr, crash_at, custom_loss

        def forward(self, x):
            return self.net(x)

        def loss(self, out, y):
            if self.custom_loss:  # written out by hand: no loss the PyTorch probe recognises
                return -(out.log_softmax(1) * nn.functional.one_hot(y, 3)).sum(1).mean()
            return nn.functional.cross_entropy(out, y)

        def training_step(self, batch, i):
            if self.crash_at is not None and self.global_step == self.crash_at:
                raise RuntimeError("boom at step %d" % self.global_step)
            x, y = batch
            out = self(x)
            loss = self.loss(out, y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_acc", (out.argmax(1) == y).float().mean())
            self.log("kl_term", loss * 0)  # not one of accmon's metrics: left out
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            out = self(x)
            self.log("val_loss", self.loss(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32)

    callbacks, kwargs, model = [], {{}}, Tiny()
    if MODE in ("callback", "custom", "nohooks"):
        from accmon.probe.lightning import AccmonCallback
        callbacks.append(AccmonCallback(record=os.environ["REC"], hooks=MODE != "nohooks", name="tiny"))
    if MODE == "custom":
        model = Tiny(custom_loss=True)
    if MODE == "crash":
        model = Tiny(crash_at=5)
    if MODE == "accumulate":
        kwargs["accumulate_grad_batches"] = 2
    kwargs["devices"] = 1
    if MODE == "ddp":
        kwargs.update(devices=2, strategy="ddp")
    trainer = L.Trainer(max_epochs=3, callbacks=callbacks, logger=CSVLogger(os.environ["LOGS"]), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        accelerator="cpu", **kwargs)
    trainer.fit(model, train, val)
''')

LIGHTNING = "import lightning as L\nfrom lightning.pytorch.loggers import CSVLogger"
PYTORCH_LIGHTNING = "import pytorch_lightning as L\nfrom pytorch_lightning.loggers import CSVLogger"


def write(tmp_path: Path, import_lightning: str = LIGHTNING) -> str:
    path = tmp_path / "train_lightning.py"
    path.write_text(SCRIPT.format(import_lightning=import_lightning))
    return str(path)


def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ, REC=str(tmp_path / "run.accmon"), LOGS=str(tmp_path / "logs"), PYTHONWARNINGS="ignore")
    e.pop("ACCMON_AUTO", None)
    return e


def run_script(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, write(tmp_path), mode], env=env(tmp_path), capture_output=True,
                          text=True, timeout=300)


def run_accmon_on(tmp_path: Path, mode: str, import_lightning: str = LIGHTNING) -> subprocess.CompletedProcess:
    return run_accmon("run", "--headless", "--record", str(tmp_path / "run.accmon"), "--", sys.executable,
                      write(tmp_path, import_lightning), mode, env=env(tmp_path), timeout=300)


def columns(frames: list[dict]) -> tuple[list[int], dict[str, list]]:
    steps: list[int] = []
    cols: dict[str, list] = {}
    for f in frames:
        if f["kind"] != "steps":
            continue
        n = len(steps)
        for name, values in f["cols"].items():
            cols.setdefault(name, [None] * n).extend(values)
        steps += f["steps"]
        for values in cols.values():
            values.extend([None] * (len(steps) - len(values)))
    return steps, cols


def facts(frames: list[dict]) -> dict:
    out: dict = {}
    for f in frames:
        if f["kind"] == "facts":
            out.update(f["facts"])
    return out


def lightning_csv(tmp_path: Path) -> dict[int, dict[str, float]]:
    """What Lightning itself logged: global step → metrics (its own CSVLogger)."""
    (path,) = (tmp_path / "logs").rglob("metrics.csv")
    rows: dict[int, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["step"]), {}).update({k: float(v) for k, v in row.items() if v and k != "step"})
    return rows


def at(steps: list[int], values: list, present: bool = True) -> list[int]:
    return [s for s, v in zip(steps, values) if (v is not None) == present]


def check_matches_lightning(tmp_path: Path, frames: list[dict], steps_per_epoch: int = 8, epochs: int = 3) -> None:
    steps, cols = columns(frames)
    total = steps_per_epoch * epochs
    assert steps == list(range(total))
    ref = lightning_csv(tmp_path)
    # Step s of accmon is Lightning's global step s: the losses logged there are the same numbers.
    assert cols["loss"] == pytest.approx([ref[s]["train_loss_step"] for s in steps], rel=1e-5)
    assert cols["acc"] == pytest.approx([ref[s]["train_acc"] for s in steps], rel=1e-5)
    assert cols["epoch"] == [s // steps_per_epoch for s in steps]
    # One validation pass per epoch, at its last step; the sanity check before training is not one.
    ends = [steps_per_epoch * (e + 1) - 1 for e in range(epochs)]
    assert at(steps, cols["val_loss"]) == ends
    assert [cols["val_loss"][s] for s in ends] == pytest.approx([ref[s]["val_loss"] for s in ends], rel=1e-5)
    assert [cols["val_acc"][s] for s in ends] == pytest.approx([ref[s]["val_acc"] for s in ends], rel=1e-5)


def test_unmodified_script_under_accmon_run(tmp_path: Path) -> None:
    out = run_accmon_on(tmp_path, "plain")
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    check_matches_lightning(tmp_path, frames)
    f = facts(frames)
    assert f["framework"] == "lightning"
    assert f["lightning"]["max_epochs"] == 3 and f["lightning"]["world_size"] == 1
    assert f["lightning_metrics"] == {"train_loss": "loss", "train_acc": "acc", "val_loss": "val_loss",
                                      "val_acc": "val_acc"}
    # The PyTorch probe did its part: per-layer gradients, learning rate, the loss it recognised.
    _, cols = columns(frames)
    assert "grad_norm" in cols and "lr" in cols and f["loss"]["kind"] == "CrossEntropyLoss"
    assert sum(1 for fr in frames if fr["kind"] == "meta") == 1
    assert [fr["status"] for fr in frames if fr["kind"] == "end"] == ["finished"]


def test_explicit_callback_with_a_loss_the_probe_does_not_know(tmp_path: Path) -> None:
    out = run_script(tmp_path, "custom")
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    assert frames[0]["name"] == "tiny"
    # Loss, accuracy and validation come from self.log here: the probe saw no loss it recognises.
    check_matches_lightning(tmp_path, frames)
    assert "loss" not in facts(frames)


def test_callback_without_the_pytorch_probe(tmp_path: Path) -> None:
    out = run_script(tmp_path, "nohooks")
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    check_matches_lightning(tmp_path, frames)
    _, cols = columns(frames)
    assert cols["lr"] == pytest.approx([0.1] * 24)
    assert "grad_norm" not in cols  # nothing of the probe's
    assert facts(frames)["framework"] == "lightning"


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    out = run_accmon_on(tmp_path, "accumulate")
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    steps, cols = columns(frames)
    assert steps == list(range(12))  # 8 batches per epoch, 2 per optimizer step, 3 epochs
    assert cols["epoch"] == [s // 4 for s in steps]
    assert at(steps, cols["val_loss"]) == [3, 7, 11]
    assert facts(frames)["lightning"]["accumulate_grad_batches"] == 2


def test_a_crash_in_training_step_is_recorded_as_a_crash(tmp_path: Path) -> None:
    out = run_accmon_on(tmp_path, "crash")
    assert out.returncode == 1
    frames = read_frames(tmp_path / "run.accmon")
    steps, _ = columns(frames)
    assert steps == list(range(5))
    (end,) = [fr for fr in frames if fr["kind"] == "end"]
    assert end["status"] == "crashed" and "boom at step 5" in end["error"]


def test_ddp_ranks_under_torchrun(tmp_path: Path) -> None:
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = run_accmon("run", "--headless", "--record", str(tmp_path / "run.accmon"), "--", torchrun,
                     "--nproc_per_node", "2", write(tmp_path), "ddp", env=env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    for rank in (0, 1):
        mine = [f for f in frames if f["rank"] == rank]
        steps, cols = columns(mine)
        assert steps == list(range(12))  # each rank gets half of the 8 batches of an epoch
        assert cols["epoch"] == [s // 4 for s in steps]
        # Training batches are training batches on every rank: Lightning leaves its DDP wrapper in eval mode
        # after validation, and the callback puts that flag back.
        assert all(v is not None for v in cols["loss"]) and at(steps, cols["val_loss"]) == [3, 7, 11]
        lf = facts(mine)["lightning"]
        assert (lf["global_rank"], lf["world_size"], lf["strategy"]) == (rank, 2, "DDPStrategy")
    report = json.loads(run_accmon("check", str(tmp_path / "run.accmon"), "--json").stdout)
    assert report["run"]["ranks"] == [0, 1] and report["run"]["status"] == "finished"


def test_the_pytorch_lightning_package_too(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning")
    out = run_accmon_on(tmp_path, "plain", PYTORCH_LIGHTNING)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    check_matches_lightning(tmp_path, frames)
    assert facts(frames)["framework"] == "lightning"


def test_callback_checks_its_arguments() -> None:
    from accmon.probe.lightning import AccmonCallback

    with pytest.raises(TypeError, match="accmon Run"):
        AccmonCallback(run="my-run")
    with pytest.raises(ValueError, match="positive"):
        AccmonCallback(every=0)


SPAWN_SCRIPT = textwrap.dedent('''
    import time
    import torch, lightning as L
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

        def training_step(self, batch, i):
            time.sleep(0.1)  # steps that take time, as real ones do: the live viewer looks for ranks twice a second
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if __name__ == "__main__":  # ddp_spawn's processes import this script again
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        y = (x[:, 0] > 0).long()
        trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, accelerator="cpu", devices=2, strategy="ddp_spawn")
        trainer.fit(Tiny(), DataLoader(TensorDataset(x, y), batch_size=16))
''')


def test_ddp_spawn_ranks_under_accmon_run(tmp_path: Path) -> None:
    """strategy="ddp_spawn" pickles the trainer, accmon's callback included, into the processes it spawns:
    training must go on (a run holds threads and sockets that cannot be pickled), and each spawned rank
    records its own steps under its Lightning rank."""
    script = tmp_path / "train_spawn.py"
    script.write_text(SPAWN_SCRIPT)
    out = run_accmon("run", "--headless", "--record", str(tmp_path / "run.accmon"), "--", sys.executable,
                     str(script), env=env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    for rank in (0, 1):
        steps, cols = columns([f for f in frames if f["rank"] == rank and f["kind"] == "steps"])
        assert steps == list(range(16))  # 256 samples, batch 16, split over 2 ranks, 2 epochs
        assert all(v is not None for v in cols["loss"])
    report = json.loads(run_accmon("check", str(tmp_path / "run.accmon"), "--json").stdout)
    assert report["run"]["ranks"] == [0, 1] and report["run"]["problems"] == []
    # Live too: the launching process registered rank 0 first; the viewer follows the spawned rank 0 as well.
    assert "rank 0 joined" in out.stderr and "rank 1 joined" in out.stderr
