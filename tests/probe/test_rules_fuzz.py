"""Whatever a stream holds, the rules neither crash nor disable themselves, and alerts keep their shape.

The rules run inside training processes on frames from any front end (the PyTorch probe, the explicit API,
imported logs); a fact of an odd type or a column of Infs must cost at most a diagnosis, never the run.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accmon.probe import wire
from accmon.probe.rules import Diagnoser

NAMES = ["loss", "acc", "val_loss", "val_acc", "lr", "epoch", "grad_norm", "update_ratio", "nonfinite_grads",
         "input_mean", "input_std", "input_min", "input_max", "input_const_frac", "input_feat_absmax_ratio",
         "batch_top_frac", "batch_top_class", "pred_top_frac", "grad_norm/0", "grad_norm/fc", "update_ratio/0",
         "act_zero/1", "act_sat/1", "weight_norm/0", "other"]
numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(min_value=-10**6, max_value=10**6), st.sampled_from([0.0, 1.0, -100.0, 1e-30, 1e30]))
leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**4), st.floats(allow_nan=True), st.text(max_size=8))
loose = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
facts = st.fixed_dictionaries({}, optional={
    "task": st.one_of(st.sampled_from(["binary", "multiclass", "multilabel", "regression"]), loose),
    "num_classes": st.one_of(st.integers(-1, 2000), loose),
    "loss": st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(
        ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss", "categorical_crossentropy", "Custom"])},
        optional={"from_logits": st.booleans(), "ignore_index": st.integers(-200, 5)}), loose),
    "targets": st.one_of(st.fixed_dictionaries({}, optional={
        "shape": st.lists(st.integers(0, 70), max_size=3), "min": numbers, "max": numbers, "dtype": st.text(max_size=8),
        "distinct": st.integers(0, 10**5), "integral": st.booleans(), "one_hot": st.booleans()}), loose),
    "predictions": st.one_of(st.fixed_dictionaries({}, optional={
        "shape": st.lists(st.integers(0, 70), max_size=3), "rows_sum_to_one": st.booleans(), "min": numbers}), loose),
    "model": st.one_of(st.fixed_dictionaries({}, optional={
        "layers": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["0", "1", "fc"]),
                                                  "kind": st.sampled_from(["Linear", "ReLU", "Sigmoid", "Tanh"]),
                                                  "params": st.integers(0, 10**6)}), max_size=4),
        "output_activation": st.sampled_from(["softmax", "sigmoid", "relu", "none", "log_softmax", "unknown"]),
        "params": st.integers(0, 10**6), "trainable_params": st.integers(0, 10**6)}), loose),
    "optimizer": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
        "covers_model": numbers, "param_groups": st.lists(st.fixed_dictionaries({"lr": numbers}), max_size=2)}),
        max_size=2), loose),
    "inputs": st.one_of(st.dictionaries(st.sampled_from(["mean", "std", "min", "max", "features", "const_features",
                                                         "feat_std_min", "feat_std_max"]), numbers), loose),
    "epoch_steps": st.one_of(st.integers(-3, 500), loose),
    "shuffled": st.one_of(st.booleans(), st.none(), loose),
    "batch_size": st.one_of(st.integers(-1, 512), loose),
    "pending_loss_calls": st.one_of(st.integers(0, 100), loose),
})


@st.composite
def streams(draw):
    frames = [wire.envelope("facts", "f", 0, 1, -1, facts=draw(facts))]
    step = 0
    for i in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 40))
        steps = list(range(step, step + n))
        step += n + draw(st.integers(0, 300))
        names = draw(st.lists(st.sampled_from(NAMES), max_size=10, unique=True))
        cols = {name: draw(st.lists(numbers, min_size=n, max_size=n)) for name in names}
        body = {"steps": steps, "cols": cols}
        if draw(st.booleans()):
            body["hists"] = {"target": draw(st.lists(st.integers(0, 500), max_size=6)),
                             "pred": draw(st.lists(st.integers(0, 500), max_size=6))}
        frames.append(wire.envelope("steps", "f", 0, i + 2, steps[-1], **body))
        if draw(st.booleans()):
            frames.append(wire.envelope("facts", "f", 0, 100 + i, steps[-1], facts=draw(facts)))
    if draw(st.booleans()):
        frames.append(wire.envelope("end", "f", 0, 999, step, status="finished", error=None, total_steps=step))
    return frames


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
def test_any_stream_is_diagnosed_without_errors(frames):
    d = Diagnoser()
    for frame in frames:
        for alert in d.observe(frame):
            assert alert["state"] in ("active", "cleared")
    assert d.errors == {}
    for alert in d.alerts():
        json.dumps(alert, allow_nan=False)
