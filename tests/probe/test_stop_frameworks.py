"""`accmon run --stop-on nan_loss` through each framework's own door (issue 18 item 1): Lightning's
`trainer.should_stop`, the HF Trainer's `control.should_training_stop`, Keras's `model.stop_training`. Each script
is unmodified, trains a tiny model for real in a subprocess, turns a weight NaN at step 20, and would run for
thousands of steps; its framework's checkpointing runs when accmon stops it, `accmon run` exits 3 and `check`
says the alert stopped it."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_accmon, write_script

pytest.importorskip("torch")

LIGHTNING = textwrap.dedent('''
    import os, time
    import torch
    import lightning as L
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

        def training_step(self, batch, i):
            if self.global_step == 20:
                with torch.no_grad():
                    self.net[0].weight.fill_(float("nan"))
            time.sleep(0.003)
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    trainer = L.Trainer(max_epochs=500, default_root_dir=os.environ["OUT"], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), DataLoader(TensorDataset(x, y), batch_size=32))
    open(os.path.join(os.environ["OUT"], "steps.txt"), "w").write(str(trainer.global_step))
''')

HF = textwrap.dedent('''
    import os, time
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=2))

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randint(1, 100, (n, 8), generator=g)
            self.y = (self.x[:, 0] < 50).long()
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.y[i]}

    class Poison(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 20:
                with torch.no_grad():
                    model.classifier.weight.fill_(float("nan"))
        def on_step_end(self, args, state, control, **kw):
            time.sleep(0.003)

    args = TrainingArguments(output_dir=os.environ["OUT"], per_device_train_batch_size=16, num_train_epochs=500,
                             learning_rate=1e-3, logging_steps=1, save_strategy="steps", save_steps=100000,
                             report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(128), callbacks=[Poison()])
    trainer.train()
    open(os.path.join(os.environ["OUT"], "steps.txt"), "w").write(str(trainer.state.global_step))
''')

KERAS = textwrap.dedent('''
    import os, time
    import numpy as np
    import keras

    class Poison(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0
        def on_train_batch_begin(self, batch, logs=None):
            if self.batches == 20:
                w = self.model.layers[0].kernel
                w.assign(np.full(w.shape, np.nan, dtype="float32"))
            self.batches += 1
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.003)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = os.environ["OUT"]
    poison = Poison()
    model.fit(x, y, epochs=500, batch_size=32, verbose=0,
              callbacks=[poison, keras.callbacks.ModelCheckpoint(os.path.join(out, "last.keras"))])
    open(os.path.join(out, "steps.txt"), "w").write(str(poison.batches))
''')


def stop_on_nan(tmp_path: Path, body: str, **env: str) -> tuple[dict, int]:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = write_script(tmp_path, "train.py", body)
    rec = tmp_path / "run.accmon"
    e = {**os.environ, "OUT": str(out_dir), "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1", **env}
    e.pop("ACCMON_AUTO", None)
    out = run_accmon("run", "--headless", "--stop-on", "nan_loss", "--record", str(rec), "--", sys.executable, script,
                     env=e, timeout=300)
    assert out.returncode == 3, out.stderr[-4000:]
    assert "stopped by accmon: nan_loss" in out.stderr
    report = json.loads(run_accmon("check", str(rec), "--json").stdout)
    run = report["run"]
    assert run["status"] == "finished", run
    assert run["stopped"]["by"] == "alert" and run["stopped"]["alert"] == "nan_loss"
    # The script ran past fit() (the framework ended its loop normally), long before its 500 epochs.
    steps = int((out_dir / "steps.txt").read_text())
    alert = next(a for a in report["alerts"] if a["id"] == "nan_loss")
    assert 20 <= alert["step"] <= run["stopped"]["step"] < 1000 and steps < 1000
    return run, steps


def test_lightning_should_stop(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    run, steps = stop_on_nan(tmp_path, LIGHTNING)
    assert run["stopped"]["step"] in (steps - 1, steps)  # global_step counts the step it stopped after
    assert glob.glob(str(tmp_path / "out" / "**" / "*.ckpt"), recursive=True)  # ModelCheckpoint saved


def test_hf_trainer_should_training_stop(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    run, steps = stop_on_nan(tmp_path, HF)
    # save_strategy is on (only every 100,000 steps): the stop asked for a checkpoint at the step it stopped.
    assert glob.glob(str(tmp_path / "out" / f"checkpoint-{steps}"))


def test_keras_stop_training(tmp_path: Path) -> None:
    if importlib.util.find_spec("keras") is None:  # not imported here: this process's Keras backend is not torch
        pytest.skip("needs keras")
    run, steps = stop_on_nan(tmp_path, KERAS, KERAS_BACKEND="torch")
    assert (tmp_path / "out" / "last.keras").exists()  # the epoch's end ran: ModelCheckpoint saved


def test_lightning_callback_stop_on_without_accmon_run(tmp_path: Path) -> None:
    """The explicit API: `AccmonCallback(stop_on=...)` in an ordinary `python train.py`; a wrong id fails at once."""
    pytest.importorskip("lightning")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    body = LIGHTNING.replace(
        'trainer = L.Trainer(max_epochs=500,',
        'from accmon.probe import StopOnError\n'
        'from accmon.probe.lightning import AccmonCallback\n'
        'try:\n'
        '    AccmonCallback(stop_on="nan_lose")\n'
        '    raise SystemExit("a wrong id was taken")\n'
        'except StopOnError as exc:\n'
        '    assert "known ids" in str(exc)\n'
        'cb = AccmonCallback(record=os.path.join(os.environ["OUT"], "run.accmon"), stop_on="nan_loss")\n'
        'trainer = L.Trainer(max_epochs=500, callbacks=[cb],')
    script = write_script(tmp_path, "train.py", body)
    e = {**os.environ, "OUT": str(out_dir), "PYTHONWARNINGS": "ignore"}
    e.pop("ACCMON_AUTO", None)
    proc = subprocess.run([sys.executable, script], env=e, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(run_accmon("check", str(out_dir / "run.accmon"), "--json").stdout)
    assert report["run"]["status"] == "finished"
    assert report["run"]["stopped"]["by"] == "alert" and report["run"]["stopped"]["alert"] == "nan_loss"
    assert int((out_dir / "steps.txt").read_text()) < 1000
