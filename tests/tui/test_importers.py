"""Logs written by other tools become accmon frames: real TensorBoard event files (torch's SummaryWriter, in the
layouts Lightning, Keras and Hugging Face use), real CSVLogger files from tiny Keras and Lightning runs."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from accmon.probe import wire
from accmon.probe.recording import RecordingReader, RecordingWriter
from accmon.tui import importers
from accmon.tui.check import summarize
from accmon.tui.importers import LogError, Mapping, load_log, map_tag, read_all

tb = pytest.importorskip("torch.utils.tensorboard", reason="writing event files needs torch and tensorboard")
SummaryWriter = tb.SummaryWriter


def steps_of(frames: list[dict]) -> tuple[list[int], dict[str, list]]:
    """All steps and columns of the frames' steps frames, concatenated."""
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


def through_wire(frames: list[dict]) -> list[dict]:
    """Every frame as a viewer would receive it: encoded and decoded with the wire's limits and checks."""
    return [wire.decode(wire.encode(f)) for f in frames]


# ---- the mapping table -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, phase, name", [
    ("loss", None, "loss"),
    ("train/loss", None, "loss"),
    ("Loss/train", None, "loss"),
    ("train_loss_step", None, "loss"),
    ("batch_loss", None, "loss"),
    ("trainLoss", None, "loss"),
    ("accuracy", None, "acc"),
    ("train_acc", None, "acc"),
    ("epoch_accuracy", None, "acc"),
    ("sparse_categorical_accuracy", None, "acc"),
    ("Accuracy/train", None, "acc"),
    ("val_loss", None, "val_loss"),
    ("Loss/val", None, "val_loss"),
    ("eval/loss", None, "val_loss"),
    ("eval/accuracy", None, "val_acc"),
    ("valid_acc_epoch", None, "val_acc"),
    ("val_accuracy", None, "val_acc"),
    ("epoch_loss", "val", "val_loss"),
    ("epoch_accuracy", "val", "val_acc"),
    ("epoch", None, "epoch"),
    ("train/epoch", None, "epoch"),
    ("lr", None, "lr"),
    ("train/learning_rate", None, "lr"),
    ("lr-Adam", None, "lr"),
    ("lr-SGD/pg2", None, "lr/1"),
    ("train/grad_norm", None, "grad_norm"),
])
def test_tags_map_onto_accmon_names(tag: str, phase: str | None, name: str) -> None:
    m = map_tag(tag, phase)
    assert isinstance(m, Mapping), m
    assert m.name == name


@pytest.mark.parametrize("tag", ["kl_loss", "train/top5_acc", "eval/runtime", "test_loss", "test/accuracy",
                                 "eval/samples_per_second", "train_val_loss", "val_epoch", "gpu_mem", "val/f1"])
def test_other_tags_are_left_out_with_a_reason(tag: str) -> None:
    m = map_tag(tag)
    assert isinstance(m, str) and m


def test_finer_training_series_and_per_epoch_validation_series_win() -> None:
    assert map_tag("train_loss_step").rank < map_tag("train_loss").rank < map_tag("train_loss_epoch").rank
    assert map_tag("val_loss_epoch").rank < map_tag("val_loss").rank < map_tag("val_loss_step").rank


# ---- TensorBoard -------------------------------------------------------------------------------------------
def test_event_file_with_a_nan_loss_keeps_the_nan_and_every_step(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path / "run"))
    for step in range(300):
        loss = float("nan") if step >= 250 else 2.0 / (step + 1)
        w.add_scalar("train/loss", loss, step)
        w.add_scalar("train/acc", min(step / 200, 1.0), step)
        if step % 100 == 99:
            w.add_scalar("val/loss", 0.5, step)
        w.add_scalar("weird/custom", 1.0, step)
    w.close()
    info, frames = read_all(str(tmp_path / "run"))
    frames = through_wire(frames)
    assert [f["kind"] for f in frames[:2]] == ["meta", "facts"] and frames[-1]["kind"] == "end"
    assert frames[-1]["status"] == "finished" and frames[-1]["total_steps"] == 300
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    steps, cols = steps_of(frames)
    assert steps == list(range(300))
    assert cols["loss"][10] == pytest.approx(2.0 / 11)
    assert all(math.isnan(v) for v in cols["loss"][250:])
    assert [s for s, v in zip(steps, cols["val_loss"]) if v is not None] == [99, 199, 299]
    assert info["mapped"] == {"train/loss": "loss", "train/acc": "acc", "val/loss": "val_loss"}
    assert "weird/custom" in info["ignored"]
    times = [t for f in frames if f["kind"] == "steps" for t in f["times"]]
    assert times == sorted(times) and all(isinstance(t, float) for t in times)


def test_a_single_event_file_is_read_too(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path))
    w.add_scalar("loss", 1.0, 0)
    w.close()
    event_file = next(p for p in tmp_path.iterdir() if "tfevents" in p.name)
    info, frames = read_all(str(event_file))
    assert steps_of(frames) == ([0], {"loss": [1.0]})


def test_many_steps_are_cut_into_frames_the_viewer_accepts(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path))
    for step in range(5000):
        w.add_scalar("loss", 1.0, step)
    w.close()
    _, frames = read_all(str(tmp_path))
    sizes = [len(f["steps"]) for f in through_wire(frames) if f["kind"] == "steps"]
    assert sum(sizes) == 5000 and max(sizes) <= importers.STEPS_PER_FRAME


def test_keras_layout_train_and_validation_directories_by_wall_time(tmp_path: Path) -> None:
    # Keras' TensorBoard callback: logs/train and logs/validation, epoch_* per epoch (step = epoch number),
    # batch-level tags with the batch as step. Validation values land at the last batch before them.
    train = SummaryWriter(str(tmp_path / "train"))
    val = SummaryWriter(str(tmp_path / "validation"))
    batch = 0
    for epoch in range(3):
        for _ in range(10):
            train.add_scalar("batch_loss", 1.0 / (batch + 1), batch)
            train.flush()
            batch += 1
        train.add_scalar("epoch_loss", 0.3, epoch)
        train.add_scalar("epoch_accuracy", 0.5 + epoch / 10, epoch)
        val.add_scalar("epoch_loss", 0.4, epoch)
        val.add_scalar("epoch_accuracy", 0.45 + epoch / 10, epoch)
        val.add_scalar("evaluation_loss_vs_iterations", 0.4, batch)
        val.flush()
        train.flush()
    train.close()
    val.close()
    info, frames = read_all(str(tmp_path))
    assert info["framework"] == "keras"
    assert info["mapped"]["train/batch_loss"] == "loss"
    assert info["mapped"]["validation/epoch_loss"] == "val_loss"
    assert info["mapped"]["validation/epoch_accuracy"] == "val_acc"
    assert "duplicate" in info["ignored"]["train/epoch_loss"]
    steps, cols = steps_of(through_wire(frames))
    assert steps == list(range(30))
    assert [s for s, v in zip(steps, cols["val_acc"]) if v is not None] == [9, 19, 29]
    assert [v for v in cols["val_acc"] if v is not None] == pytest.approx([0.45, 0.55, 0.65])
    assert [e for s, e in zip(steps, cols["epoch"]) if e is not None] == [0, 1, 2]


def test_keras_layout_with_epoch_values_only_numbers_steps_by_epoch(tmp_path: Path) -> None:
    train = SummaryWriter(str(tmp_path / "train"))
    val = SummaryWriter(str(tmp_path / "validation"))
    for epoch in range(4):
        train.add_scalar("epoch_loss", 1.0 - epoch / 10, epoch)
        val.add_scalar("epoch_loss", 1.1 - epoch / 20, epoch)
    train.close()
    val.close()
    _, frames = read_all(str(tmp_path))
    steps, cols = steps_of(frames)
    assert steps == [0, 1, 2, 3] and cols["epoch"] == [0, 1, 2, 3]
    assert cols["val_loss"] == pytest.approx([1.1, 1.05, 1.0, 0.95])


def test_add_scalars_directories_give_their_phase(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path))
    for step in range(5):
        w.add_scalars("Loss", {"train": 1.0, "val": 2.0}, step)
    w.close()
    info, frames = read_all(str(tmp_path))
    assert sorted(info["mapped"].values()) == ["loss", "val_loss"]
    steps, cols = steps_of(frames)
    assert cols["loss"] == [1.0] * 5 and cols["val_loss"] == [2.0] * 5


def test_hugging_face_tags_and_fractional_epochs(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path))
    for step, epoch in ((10, 0.33), (20, 0.67), (30, 1.0), (40, 1.33)):
        w.add_scalar("train/loss", 1.0, step)
        w.add_scalar("train/epoch", epoch, step)
        w.add_scalar("train/learning_rate", 1e-3, step)
    w.add_scalar("eval/loss", 0.9, 30)
    w.add_scalar("eval/accuracy", 0.7, 30)
    w.add_scalar("eval/runtime", 0.1, 30)
    w.close()
    info, frames = read_all(str(tmp_path))
    steps, cols = steps_of(frames)
    assert steps == [10, 20, 30, 40]
    assert cols["epoch"] == [0, 0, 0, 1]  # epoch progress 1.0 ends epoch 0; 1.33 is in epoch 1
    assert cols["lr"] == pytest.approx([1e-3] * 4)
    assert cols["val_acc"] == [None, None, pytest.approx(0.7), None]
    assert "eval/runtime" in info["ignored"]


def test_several_runs_show_the_newest_and_name_the_others(tmp_path: Path) -> None:
    for version, loss in ((0, 1.0), (1, 2.0)):
        w = SummaryWriter(str(tmp_path / "lightning_logs" / f"version_{version}"))
        w.add_scalar("train_loss", loss, 0)
        w.close()
    info, frames = read_all(str(tmp_path))
    assert info["name"] == "lightning_logs-version_1"
    assert info["others"] == [os.path.join("lightning_logs", "version_0")]
    assert steps_of(frames)[1]["loss"] == [2.0]


def test_a_damaged_event_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "events.out.tfevents.123.host"
    bad.write_bytes(b"\x00garbage, not a record" * 10)
    with pytest.raises(LogError, match="tfevents"):
        load_log(str(bad))


def test_a_log_with_no_metric_accmon_reads_says_what_it_found(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path))
    w.add_scalar("gpu/memory", 1.0, 0)
    w.close()
    with pytest.raises(LogError, match="gpu/memory"):
        load_log(str(tmp_path))


def test_what_is_not_a_log_is_none(tmp_path: Path) -> None:
    rec = tmp_path / "run.accmon"
    RecordingWriter(str(rec)).close()
    (tmp_path / "notes.csv").write_text("name,value\na,1\n")
    (tmp_path / "empty").mkdir()
    assert load_log(str(rec)) is None
    assert load_log(str(tmp_path / "notes.csv")) is None
    assert load_log(str(tmp_path / "empty")) is None
    assert load_log(str(tmp_path / "missing")) is None


# ---- CSV ---------------------------------------------------------------------------------------------------
def _run(script: str, cwd: Path) -> None:
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONWARNINGS="ignore")
    env.pop("ACCMON_AUTO", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_keras_csvlogger_file(tmp_path: Path) -> None:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    _run("""
        import numpy as np, keras
        rng = np.random.default_rng(0)
        x = rng.normal(size=(128, 4)).astype("float32"); y = (x[:, 0] > 0).astype("int64")
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
        m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[keras.callbacks.CSVLogger("log.csv")])
    """, tmp_path)
    info, frames = read_all(str(tmp_path / "log.csv"))
    assert info["format"] == "keras-csv" and info["times"] == "file mtime"
    assert info["mapped"] == {"accuracy": "acc", "loss": "loss", "val_accuracy": "val_acc", "val_loss": "val_loss",
                              "epoch": "epoch"}
    steps, cols = steps_of(through_wire(frames))
    assert steps == [0, 1, 2] and cols["epoch"] == [0, 1, 2]
    assert all(0 <= a <= 1 for a in cols["acc"] + cols["val_acc"])
    assert frames[1]["facts"]["framework"] == "keras"


@pytest.fixture(scope="module")
def lightning_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("lightning")
    where = tmp_path_factory.mktemp("pl")
    _run("""
        import torch, lightning as L
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
            def forward(self, x):
                return self.net(x)
            def training_step(self, batch, i):
                x, y = batch
                out = self(x)
                loss = nn.functional.cross_entropy(out, y)
                self.log("train_loss", loss, on_step=True, on_epoch=True)
                self.log("train_acc", (out.argmax(1) == y).float().mean())
                return loss
            def validation_step(self, batch, i):
                x, y = batch
                out = self(x)
                self.log("val_loss", nn.functional.cross_entropy(out, y))
                self.log("val_acc", (out.argmax(1) == y).float().mean())
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
        val = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32)
        trainer = L.Trainer(max_epochs=3, logger=[CSVLogger("csv"), TensorBoardLogger("tb")], log_every_n_steps=1,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(Tiny(), train, val)
    """, where)
    return where


def test_lightning_csvlogger_file(lightning_logs: Path) -> None:
    info, frames = read_all(str(lightning_logs / "csv"))  # the directory: its newest metrics.csv
    assert info["format"] == "lightning-csv" and info["name"] == "lightning_logs-version_0"
    assert info["mapped"]["train_loss_step"] == "loss"
    assert "duplicate" in info["ignored"]["train_loss_epoch"]
    steps, cols = steps_of(through_wire(frames))
    assert steps == list(range(24))  # 8 batches × 3 epochs, Lightning's global_step
    assert all(v is not None for v in cols["loss"])
    assert [s for s, v in zip(steps, cols["val_loss"]) if v is not None] == [7, 15, 23]
    assert cols["epoch"][0] == 0 and cols["epoch"][-1] == 2


def test_lightning_tensorboard_logger_reads_as_the_csv_does(lightning_logs: Path) -> None:
    _, tb_frames = read_all(str(lightning_logs / "tb"))
    _, csv_frames = read_all(str(lightning_logs / "csv"))
    tb_steps, tb_cols = steps_of(tb_frames)
    csv_steps, csv_cols = steps_of(csv_frames)
    assert tb_steps == csv_steps
    for name in ("loss", "acc", "val_loss", "val_acc", "epoch"):
        assert tb_cols[name] == pytest.approx(csv_cols[name], rel=1e-6), name


# ---- what check and replay get ------------------------------------------------------------------------------
def test_imported_frames_make_a_recording_that_check_reads(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(50):
        w.add_scalar("loss", 1.0 if step < 40 else float("nan"), step)
        w.add_scalar("epoch", step // 10, step)
    w.close()
    rec = tmp_path / "imported.accmon"
    found = importers.to_recording(str(tmp_path / "tb"), str(rec))
    assert found is not None and found["format"] == "tensorboard"
    _, direct = read_all(str(tmp_path / "tb"))
    recorded = list(RecordingReader(str(rec)).frames())
    assert len(recorded) == len(direct)
    assert [f["seq"] for f in recorded] == [f["seq"] for f in direct]
    assert steps_of(recorded)[0] == steps_of(direct)[0]
    assert math.isnan(steps_of(recorded)[1]["loss"][45])
    assert importers.to_recording(str(rec), str(tmp_path / "again.accmon")) is None  # a recording is no log
    summary, _ = summarize(RecordingReader(str(rec)).frames())
    assert summary.status == "finished"
    assert summary.steps == 50 and summary.last_step == 49 and summary.epochs == 5
    assert summary.id.startswith("import-")


def _noise(step: int) -> float:
    """Deterministic jitter in [-1, 1] (no random state shared between tests)."""
    return math.sin(step * 12.9898) * 0.5 + math.sin(step * 78.233) * 0.5


# Scalar-level faults as they show in logs people already have: step → {tag: value}. 600 logged steps.
SCENARIOS = {
    "healthy": (None, lambda s: {
        "train/loss": 2.3 * math.exp(-s / 150) + 0.1 + 0.02 * _noise(s), "train/acc": min(0.95, 0.1 + s / 400),
        "val/loss": 2.3 * math.exp(-s / 150) + 0.15 if s % 50 == 49 else None,
        "val/acc": min(0.93, 0.1 + s / 400) if s % 50 == 49 else None}),
    "nan": ("nan_loss", lambda s: {"train/loss": 1.0 - s / 1000 if s < 300 else float("nan"),
                                   "train/acc": 0.5 + s / 1000}),
    "stuck at chance": ("accuracy_stuck", lambda s: {"train/loss": 2.30 + 0.01 * _noise(s),
                                                     "train/acc": 0.1 + 0.01 * _noise(s)}),
    "zero accuracy": ("accuracy_stuck", lambda s: {"train/loss": 2.30 + 0.01 * _noise(s), "train/acc": 0.0}),
    "diverging": ("lr_too_high", lambda s: {"train/loss": math.exp(s / 100), "train/acc": 0.1}),
    "oscillating": ("lr_too_high", lambda s: {
        "train/loss": 2.0 - s / 200 if s < 300 else (0.5 if s % 2 else 4.0),
        "train/acc": 0.1 + s / 400 if s < 300 else (0.85 if s % 2 else 0.2)}),
    "overfitting": ("overfitting", lambda s: {
        "train/loss": 2.3 * math.exp(-s / 100) + 0.01, "train/acc": min(1.0, 0.1 + s / 200),
        "val/loss": 1.0 + max(0.0, (s - 200) / 200) if s % 25 == 24 else None,
        "val/acc": 0.6 if s % 25 == 24 else None}),
    "plateau": ("val_loss_stagnating", lambda s: {
        "train/loss": math.exp(-s / 100) + 0.3, "train/acc": min(0.8, 0.1 + s / 200),
        "val/loss": max(0.9, 1.5 - s / 200) + 0.001 * _noise(s) if s % 25 == 24 else None,
        "val/acc": 0.7 if s % 25 == 24 else None}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_scalar_diagnosis_runs_on_an_imported_log(tmp_path: Path, scenario: str) -> None:
    expected, values = SCENARIOS[scenario]
    w = SummaryWriter(str(tmp_path))
    for step in range(600):
        for tag, v in values(step).items():
            if v is not None:
                w.add_scalar(tag, v, step)
    w.close()
    _, frames = load_log(str(tmp_path))
    summary, alerts = summarize(frames)
    assert summary.steps == 600 and summary.status == "finished"
    fired = {a["id"] for a in alerts}
    if expected is None:
        assert not [a for a in alerts if a["severity"] != "info"], alerts
    else:
        assert expected in fired, alerts


def test_the_diagnosis_runs_on_a_csv_log_too(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["epoch", "step", "train_loss", "train_acc"])
        for s in range(400):
            out.writerow([s // 50, s, "nan" if s >= 250 else 1.0 - s / 1000, 0.5 + s / 1000])
    _, frames = load_log(str(path))
    _, alerts = summarize(frames)
    nan = [a for a in alerts if a["id"] == "nan_loss"]
    assert nan and nan[0]["step"] == 250


def test_an_event_declaring_a_huge_tensor_is_passed_over_without_building_it(tmp_path: Path) -> None:
    # Issue 16 item 9: a ~120-byte event may declare a [20000, 10000] tensor; make_ndarray would fill in 800 MB
    # before anyone looked at its size. Only scalars are read, and the shape is looked at first.
    import tracemalloc

    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    dim = tensor_shape_pb2.TensorShapeProto.Dim
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0],
                                  tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[dim(size=20000), dim(size=10000)]))
    w = EventFileWriter(str(tmp_path / "run"))
    for step, value in [(0, summary_pb2.Summary.Value(tag="loss", simple_value=1.0)),
                        (1, summary_pb2.Summary.Value(tag="train/acc", tensor=huge))]:
        w.add_event(event_pb2.Event(wall_time=1.0, step=step, summary=summary_pb2.Summary(value=[value])))
    w.close()
    tracemalloc.start()
    try:
        info, frames = read_all(str(tmp_path / "run"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"reading a 120-byte event took {peak / 2**20:.0f} MB"
    steps, cols = steps_of(through_wire(frames))
    assert steps == [0] and cols["loss"] == [1.0] and "acc" not in cols
