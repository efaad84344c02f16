"""The Hugging Face Trainer under accmon: a tiny BERT built from a config (nothing downloaded), trained for
real on CPU in a subprocess. The Trainer's own `log_history` (logging every step) is the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import read_frames, run_accmon

pytest.importorskip("transformers", reason="the Trainer integration needs transformers (accmon[hf])")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    MODE = sys.argv[1]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(config)

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(1, 100, (n, 8), generator=g)
            self.y = (self.x[:, 0] < 50).long()
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.y[i]}

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    callbacks = []
    if MODE == "nohooks":
        from accmon.probe.hf import AccmonCallback
        callbacks.append(AccmonCallback(hooks=False, record=os.environ["REC"], name="tiny-bert"))
    args = TrainingArguments(output_dir=os.environ["OUT"], per_device_train_batch_size=16, per_device_eval_batch_size=32,
                             num_train_epochs=2, learning_rate=1e-3, logging_steps=1, eval_strategy="epoch",
                             save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(128, 0), eval_dataset=Tokens(64, 1),
                      compute_metrics=accuracy, callbacks=callbacks)
    trainer.train()
    with open(os.environ["HISTORY"], "w") as f:
        json.dump(trainer.state.log_history, f)
''')


def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ, REC=str(tmp_path / "run.accmon"), OUT=str(tmp_path / "out"), HISTORY=str(tmp_path / "h.json"),
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    e.pop("ACCMON_AUTO", None)
    return e


def script(tmp_path: Path) -> str:
    path = tmp_path / "train_hf.py"
    path.write_text(SCRIPT)
    return str(path)


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


def history(tmp_path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """The Trainer's log_history: (train logs, eval logs) by accmon step (the Trainer's step - 1)."""
    train, evals = {}, {}
    for entry in json.loads((tmp_path / "h.json").read_text()):
        if "loss" in entry:
            train[entry["step"] - 1] = entry
        elif "eval_loss" in entry:
            evals[entry["step"] - 1] = entry
    return train, evals


def test_unmodified_trainer_script_under_accmon_run(tmp_path: Path) -> None:
    out = run_accmon("run", "--headless", "--record", str(tmp_path / "run.accmon"), "--", sys.executable,
                     script(tmp_path), "plain", env=env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    steps, cols = columns(frames)
    train, evals = history(tmp_path)
    assert steps == list(range(16)) == sorted(train)  # 128 samples / 16 per step, 2 epochs
    # Every step's loss as the Trainer logged it (logging_steps=1: the step's own loss), measured by the probe.
    assert cols["loss"] == pytest.approx([train[s]["loss"] for s in steps], rel=1e-4)
    assert all(a is not None and 0 <= a <= 1 for a in cols["acc"])
    assert cols["epoch"] == [0] * 8 + [1] * 8
    assert [s for s, v in zip(steps, cols["val_loss"]) if v is not None] == sorted(evals) == [7, 15]
    assert [cols["val_loss"][s] for s in (7, 15)] == pytest.approx([evals[s]["eval_loss"] for s in (7, 15)], rel=1e-4)
    assert [cols["val_acc"][s] for s in (7, 15)] == pytest.approx([evals[s]["eval_accuracy"] for s in (7, 15)])
    assert "grad_norm" in cols and "lr" in cols
    f = facts(frames)
    assert f["framework"] == "transformers" and f["epoch_steps"] == 8
    assert f["transformers"]["per_device_train_batch_size"] == 16 and f["transformers"]["total_steps"] == 16
    assert [fr["status"] for fr in frames if fr["kind"] == "end"] == ["finished"]


def test_explicit_callback_without_the_pytorch_probe_records_what_the_trainer_logs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, script(tmp_path), "nohooks"], env=env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = read_frames(tmp_path / "run.accmon")
    assert frames[0]["name"] == "tiny-bert"
    steps, cols = columns(frames)
    train, evals = history(tmp_path)
    assert steps == list(range(16))
    assert cols["loss"] == pytest.approx([train[s]["loss"] for s in steps])
    assert cols["lr"] == pytest.approx([train[s]["learning_rate"] for s in steps])
    assert cols["grad_norm"] == pytest.approx([train[s]["grad_norm"] for s in steps])
    assert cols["epoch"] == [0] * 8 + [1] * 8
    assert [cols["val_acc"][s] for s in (7, 15)] == pytest.approx([evals[s]["eval_accuracy"] for s in (7, 15)])
    assert facts(frames)["transformers_metrics"]["eval_loss"] == "val_loss"
    assert "acc" not in cols  # the Trainer logs no training accuracy, and the probe was off


def test_importing_the_integration_imports_no_transformers_and_zero_code_waits_for_the_trainer(tmp_path: Path) -> None:
    probe = "import sys, accmon.probe.hf; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env(tmp_path))
    assert out.stdout.strip() == "False", out.stderr
    # A script that imports transformers but never the Trainer: accmon run does not import it either.
    body = "import sys, transformers\nprint('transformers.trainer' in sys.modules)\n"
    (tmp_path / "tok.py").write_text(body)
    out = run_accmon("run", "--headless", "--", sys.executable, str(tmp_path / "tok.py"), env=env(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_callback_checks_its_arguments() -> None:
    from accmon.probe.hf import AccmonCallback

    with pytest.raises(TypeError, match="accmon Run"):
        AccmonCallback(run="my-run")
    with pytest.raises(ValueError, match="positive"):
        AccmonCallback(every=-1)
