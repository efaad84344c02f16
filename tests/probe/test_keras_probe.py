"""Keras 3 on its torch backend (no TensorFlow needed): the explicit callback, and `fit()` instrumented with no
code change. Per-batch values are checked against Keras's own logs, which are running means over the epoch:
batch k's value is (k+1)·mean_k − k·mean_(k−1) when batches are of equal size (as here)."""

import os
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

import accmon.probe.keras as apk  # noqa: E402

# Keras (not accmon) calls np.array(tensor) without the copy keyword of NumPy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn.t accept a copy keyword")
import accmon.probe.torch as apt  # noqa: E402
from accmon.probe.run import Run  # noqa: E402
from tests.conftest import read_frames, run_accmon, write_script  # noqa: E402


class KerasLogs(keras.callbacks.Callback):
    """Keras's own per-batch values, de-averaged from its running means."""

    def __init__(self):
        super().__init__()
        self.batches = {}
        self.prev = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.prev = {}
        self.k = 0

    def on_train_batch_end(self, batch, logs=None):
        for key, value in logs.items():
            prev = self.prev.get(key)
            v = value if prev is None else (self.k + 1) * value - self.k * prev
            self.batches.setdefault(key, []).append(v)
            self.prev[key] = value
        self.k += 1


def read(path):
    metrics, facts = {}, {}
    for f in read_frames(path):
        if f["kind"] == "steps":
            for name, values in f["cols"].items():
                for s, v in zip(f["steps"], values):
                    if v is not None:
                        metrics.setdefault(name, {})[s] = v
        elif f["kind"] == "facts":
            facts.update(f["facts"])
    return {k: [v[s] for s in sorted(v)] for k, v in metrics.items()}, {k: sorted(v) for k, v in metrics.items()}, facts


def data(n=256, binary=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32" if binary else "int64")
    return x, y


@pytest.fixture
def run(tmp_path):
    r = Run("keras-test", record=str(tmp_path / "k.accmon"), rules=False)
    yield r
    apt.uninstall()
    apk.uninstall()
    r.close()


def test_callback_records_batches_validation_and_layers(run):
    x, y = data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ref = KerasLogs()
    hist = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, shuffle=False, verbose=0,
                     callbacks=[apk.AccmonCallback(run, every=1), ref])
    run.close()
    series, steps, facts = read(run.record)
    assert steps["loss"] == list(range(18))  # 192 training samples / 32, three epochs
    assert series["loss"] == pytest.approx(ref.batches["loss"], rel=1e-4, abs=1e-5)
    assert series["acc"] == pytest.approx(ref.batches["accuracy"], abs=1e-5)
    assert steps["val_loss"] == [5, 11, 17]
    assert series["val_loss"] == pytest.approx(hist.history["val_loss"])
    assert series["val_acc"] == pytest.approx(hist.history["val_accuracy"])
    assert series["epoch"] == [0] * 6 + [1] * 6 + [2] * 6
    assert series["lr"] == pytest.approx([0.01] * 18)
    for name in ("grad_norm", "grad_norm/dense", "grad_norm/dense_1", "weight_norm/dense", "update_ratio/dense",
                 "input_mean", "batch_classes"):
        assert len(series.get(name, [])) == 18, name
    assert facts["framework"] == "keras"
    assert facts["model"]["layers"][0] == {"name": "dense", "kind": "Dense", "params": 176, "trainable": True}
    assert facts["model"]["output_activation"] == "softmax"
    assert facts["loss"] == {"kind": "sparse_categorical_crossentropy", "from_logits": False, "via": "keras"}
    assert facts["optimizer"][0]["kind"] == "Adam" and facts["optimizer"][0]["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert facts["task"] == "multiclass" and facts["num_classes"] == 2 and facts["epoch_steps"] == 6


def test_binary_sigmoid_accuracy(run):
    x, y = data(binary=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    ref = KerasLogs()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[apk.AccmonCallback(run), ref])
    run.close()
    series, steps, facts = read(run.record)
    assert series["acc"] == pytest.approx(ref.batches["accuracy"], abs=1e-5)
    assert facts["task"] == "binary" and facts["model"]["output_activation"] == "sigmoid"


def test_install_instruments_fit_without_code_change(run):
    apk.install(run)
    x, y = data()
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)  # no callbacks given
    apk.uninstall()
    run.close()
    series, steps, facts = read(run.record)
    assert steps["loss"] == list(range(8))
    assert len(series["acc"]) == 8
    assert facts["loss"]["from_logits"] is True
    assert not hasattr(model, "_compute_loss") or "_compute_loss" not in vars(model)  # the patch went with fit()


def test_callback_checks_arguments():
    with pytest.raises(ValueError, match="positive"):
        apk.AccmonCallback(every=0)


KERAS_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
    """
)


def test_accmon_run_instruments_an_unmodified_keras_script(tmp_path):
    script = write_script(tmp_path, "train_keras.py", KERAS_SCRIPT)
    rec = tmp_path / "keras.accmon"
    out = run_accmon("run", "--headless", "--record", str(rec), "--", sys.executable, script,
                     env={**os.environ, "KERAS_BACKEND": "torch"}, timeout=180)
    assert out.returncode == 0, out.stderr
    series, steps, facts = read(rec)
    assert steps["loss"] == list(range(12))
    assert steps["val_acc"] == [5, 11]
    assert facts["framework"] == "keras" and "grad_norm/dense" in series
