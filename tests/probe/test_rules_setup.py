"""Static rules: set-up faults visible in the first batch (inputs, targets, loss, output activation, optimizer).

Each fires within the first steps, stays silent on the correct set-up, and clears when a later facts frame
(or later batches) show the fault gone.
"""

from __future__ import annotations

import math

import pytest
from test_rules_streams import Sim, feed, fired

from accmon.probe import wire

RAW_PIXELS = {"mean": 121.0, "std": 71.0, "min": 0.0, "max": 255.0, "feat_absmax_ratio": 1.8, "const_frac": 0.0}


def alerts_of(sim: Sim) -> dict:
    d, _ = feed(sim.frames())
    return fired(d, ("info", "warning", "critical"))


def then_facts(sim: Sim, at_frame: int, **facts) -> list[dict]:
    """The sim's frames with a facts frame inserted after `at_frame` steps frames."""
    frames = sim.frames()
    steps_seen = 0
    for i, f in enumerate(frames):
        if f["kind"] == "steps":
            steps_seen += 1
            if steps_seen == at_frame:
                frames.insert(i + 1, wire.envelope("facts", "sim", 0, 10**6, f["step"], facts=facts))
                break
    return frames


# ---- unnormalized_input ------------------------------------------------------------------------------

def test_raw_pixels_are_flagged_at_the_first_step():
    a = alerts_of(Sim(inputs=RAW_PIXELS, steps=100))["unnormalized_input/scale"]
    assert a["severity"] == "warning" and a["step"] == 0
    assert a["evidence"]["mean"] == pytest.approx(121, rel=0.05) and a["evidence"]["max"] == pytest.approx(255, rel=0.05)
    assert "255" in a["fix"]


def test_standardised_and_moderately_scaled_inputs_are_not():
    assert "unnormalized_input" not in alerts_of(Sim(steps=100))
    # The healthy CNN demo feeds noisy images with std 8: unusual, not a fault.
    noisy = {"mean": 0.0, "std": 8.0, "min": -37.0, "max": 37.0, "feat_absmax_ratio": 2.0, "const_frac": 0.0}
    assert "unnormalized_input" not in alerts_of(Sim(inputs=noisy, steps=100))


def test_normalising_later_clears_it():
    scaled = lambda s, v: v / 100.0 if v is not None and s >= 200 else v  # noqa: E731
    sim = Sim(inputs=RAW_PIXELS, steps=400, overrides={f"input_{k}": scaled for k in ("mean", "std", "min", "max")})
    d, _ = feed(sim.frames())
    (a,) = [a for a in d.alerts() if a["id"] == "unnormalized_input"]
    assert a["state"] == "cleared" and 200 <= a["cleared_step"] <= 260


def test_feature_scales_orders_of_magnitude_apart():
    mixed = {"mean": 900.0, "std": 12.0, "min": 0.0, "max": 52000.0, "feat_absmax_ratio": 25000.0, "const_frac": 0.0}
    a = alerts_of(Sim(inputs=mixed, steps=50))["unnormalized_input/feature_scales"]
    assert a["evidence"]["feature_scale_ratio"] == 25000 and "StandardScaler" in a["fix"]
    # Sparse 0/1 features with a rare one give a big ratio at small values: not a scale problem.
    sparse = {"mean": 0.05, "std": 0.2, "min": 0.0, "max": 1.0, "feat_absmax_ratio": 3000.0, "const_frac": 0.0}
    assert "unnormalized_input" not in alerts_of(Sim(inputs=sparse, steps=50))


# ---- no_input_variance -------------------------------------------------------------------------------

def test_constant_inputs_are_critical_at_once():
    zeros = {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "feat_absmax_ratio": 1.0, "const_frac": 1.0}
    a = alerts_of(Sim(inputs=zeros, steps=60))["no_input_variance/constant"]
    assert a["severity"] == "critical" and a["step"] == 0 and a["evidence"]["constant_fraction"] == 1.0


def test_a_few_constant_features_are_normal():
    border = {"mean": 0.1, "std": 0.3, "min": 0.0, "max": 1.0, "feat_absmax_ratio": 50.0, "const_frac": 0.2}
    assert "no_input_variance" not in alerts_of(Sim(inputs=border, steps=100))


# ---- loss_task_mismatch ------------------------------------------------------------------------------

def test_mse_on_class_ids():
    sim = Sim(loss_kind="MSELoss", task="regression", steps=60, predictions={"shape": [64, 1]},
              targets={"dtype": "float32", "shape": [64, 1], "min": 0.0, "max": 3.0, "distinct": 4, "integral": True})
    a = alerts_of(sim)["loss_task_mismatch/regression_on_classes"]
    assert a["severity"] == "warning" and a["step"] == 0 and "CrossEntropyLoss" in a["fix"]


def test_mse_on_binary_labels_is_advice_until_training_is_in_trouble():
    sim = Sim(loss_kind="MSELoss", task="binary", classes=2, steps=300, loss0=0.25, loss_floor=0.05)
    assert alerts_of(sim)["loss_task_mismatch"]["severity"] == "info"
    stuck = sim.with_(overrides={"loss": lambda s, v: 0.25, "acc": lambda s, v: 0.5})
    assert alerts_of(stuck)["loss_task_mismatch"]["severity"] == "warning"


def test_mse_on_genuine_quantities_is_fine():
    sim = Sim(loss_kind="MSELoss", task="regression", steps=60,
              targets={"dtype": "float32", "shape": [64, 1], "min": 1.0, "max": 5.0, "distinct": 5, "integral": True})
    assert "loss_task_mismatch" not in alerts_of(sim)  # ratings 1-5: integers, but not class ids from 0


def test_a_classification_loss_on_continuous_targets():
    sim = Sim(loss_kind="BCEWithLogitsLoss", task="binary", classes=2, steps=60,
              targets={"dtype": "float32", "shape": [64, 1], "min": -2.5, "max": 7.3, "integral": False, "distinct": 64})
    a = alerts_of(sim)["loss_task_mismatch/classification_on_continuous"]
    assert a["severity"] == "critical"
    soft = sim.with_(targets={"dtype": "float32", "shape": [64, 1], "min": 0.05, "max": 0.95, "integral": False})
    assert "loss_task_mismatch" not in alerts_of(soft)  # soft labels are probabilities


# ---- double_softmax ----------------------------------------------------------------------------------

def test_a_softmax_layer_before_cross_entropy():
    a = alerts_of(Sim(output_activation="softmax", steps=60))["double_softmax"]
    assert a["step"] == 0 and "remove the final softmax" in a["fix"]


def test_outputs_that_already_sum_to_one():
    # F.softmax inside forward(): no module to name, the values tell.
    sim = Sim(steps=60, predictions={"rows_sum_to_one": True, "min": 0.02, "max": 0.9})
    assert "double_softmax" in alerts_of(sim)


def test_log_softmax_with_nll_and_raw_scores_with_cross_entropy_are_right():
    assert "double_softmax" not in alerts_of(Sim(steps=60))
    nll = Sim(steps=60, loss_kind="NLLLoss", output_activation="log_softmax", predictions={"logsumexp_zero": True})
    found = alerts_of(nll)
    assert "double_softmax" not in found and "output_activation_mismatch" not in found


def test_removing_the_softmax_clears_it():
    sim = Sim(output_activation="softmax", steps=200)
    frames = then_facts(sim, 2, model={**sim.facts()["model"], "output_activation": "none"})
    d, _ = feed(frames)
    (a,) = [a for a in d.alerts() if a["id"] == "double_softmax"]
    # The facts came after step 99, with steps since the last evaluation point (96): the next point (104) sees
    # them, whenever the frame that brought them arrived.
    assert a["state"] == "cleared" and a["cleared_step"] == 104


# ---- output_activation_mismatch ----------------------------------------------------------------------

@pytest.mark.parametrize("act, loss, task, cause, severity", [
    ("relu", "CrossEntropyLoss", "multiclass", "relu_logits", "warning"),
    ("sigmoid", "BCEWithLogitsLoss", "binary", "sigmoid_into_logits", "warning"),
    ("none", "BCELoss", "binary", "scores_into_probability_loss", "warning"),
    ("none", "NLLLoss", "multiclass", "nll_input", "critical"),
    ("softmax", "NLLLoss", "multiclass", "nll_input", "warning"),
])
def test_output_activations_that_cannot_express_the_loss(act, loss, task, cause, severity):
    sim = Sim(output_activation=act, loss_kind=loss, task=task, classes=2 if task == "binary" else 4, steps=60)
    a = alerts_of(sim)[f"output_activation_mismatch/{cause}"]
    assert a["severity"] == severity and a["step"] == 0


def test_softmax_for_several_labels_per_sample():
    sim = Sim(output_activation="softmax", loss_kind="BCELoss", task="multilabel", steps=60,
              targets={"dtype": "float32", "shape": [64, 4], "min": 0.0, "max": 1.0, "one_hot": False})
    assert "output_activation_mismatch/softmax_multilabel" in alerts_of(sim)


def test_a_bounded_output_for_targets_beyond_its_range():
    sim = Sim(output_activation="sigmoid", loss_kind="MSELoss", task="regression", steps=60,
              targets={"dtype": "float32", "shape": [64, 1], "min": 0.0, "max": 37.0, "integral": False})
    a = alerts_of(sim)["output_activation_mismatch/bounded_output"]
    assert "37" in a["message"]
    inside = sim.with_(targets={"dtype": "float32", "shape": [64, 1], "min": 0.1, "max": 0.9, "integral": False})
    assert "output_activation_mismatch" not in alerts_of(inside)


def test_matching_outputs_and_losses_are_silent():
    for sim in (Sim(steps=60), Sim(output_activation="sigmoid", loss_kind="BCELoss", task="binary", classes=2, steps=60),
                Sim(loss_kind="BCEWithLogitsLoss", task="binary", classes=2, steps=60)):
        assert "output_activation_mismatch" not in alerts_of(sim)


# ---- label_issue -------------------------------------------------------------------------------------

def test_silent_broadcasting_of_n_against_n_by_1():
    sim = Sim(loss_kind="MSELoss", task="binary", classes=2, steps=60, predictions={"shape": [64, 1]},
              targets={"dtype": "float32", "shape": [64], "min": 0.0, "max": 1.0})
    a = alerts_of(sim)["label_issue/broadcast"]
    assert a["severity"] == "critical" and a["evidence"]["broadcast_shape"] == [64, 64]


def test_class_ids_beyond_the_outputs():
    sim = Sim(steps=60, targets={"min": 1.0, "max": 4.0})  # labels 1..4 for 4 outputs
    a = alerts_of(sim)["label_issue/out_of_range"]
    assert a["severity"] == "critical" and "y - 1" in a["fix"]


def test_the_ignore_index_is_not_out_of_range():
    sim = Sim(steps=60, targets={"min": -100.0, "max": 3.0}, extra_facts={"loss": {"kind": "CrossEntropyLoss",
                                                                                   "ignore_index": -100}})
    assert "label_issue" not in alerts_of(sim)


def test_class_ids_given_to_bce():
    sim = Sim(loss_kind="BCEWithLogitsLoss", task="binary", classes=2, steps=60,
              targets={"dtype": "float32", "shape": [64, 1], "min": 0.0, "max": 3.0, "integral": True})
    assert alerts_of(sim)["label_issue/out_of_range"]["severity"] == "critical"


def test_one_hot_rows_under_bce():
    sim = Sim(loss_kind="BCELoss", output_activation="sigmoid", task="multilabel", steps=60,
              targets={"dtype": "float32", "shape": [64, 4], "min": 0.0, "max": 1.0, "one_hot": True})
    a = alerts_of(sim)["label_issue/one_hot"]
    assert "argmax(1)" in a["fix"]


def test_float_class_ids():
    sim = Sim(steps=60, targets={"dtype": "float32"})
    assert "y.long()" in alerts_of(sim)["label_issue/float_class_ids"]["fix"]


def test_fixing_the_shapes_clears_the_broadcast():
    sim = Sim(loss_kind="MSELoss", task="binary", classes=2, steps=200, predictions={"shape": [64, 1]},
              targets={"dtype": "float32", "shape": [64], "min": 0.0, "max": 1.0})
    frames = then_facts(sim, 2, targets={**sim.facts()["targets"], "shape": [64, 1]})
    d, _ = feed(frames)
    (a,) = [a for a in d.alerts() if a["id"] == "label_issue"]
    assert a["state"] == "cleared"


# ---- class_imbalance ---------------------------------------------------------------------------------

def test_a_dominant_class_is_advice_at_once_and_a_warning_once_the_model_collapses_onto_it():
    # A model that learned (accuracy above the majority's share): a short run that only learned the prior is
    # named at its end (single_class_prediction, and the imbalance becomes a warning).
    sim = Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss", class_shares=(0.97, 0.03), steps=60,
              overrides={"acc": lambda s, v: 0.995})
    a = alerts_of(sim)["class_imbalance"]
    assert a["severity"] == "info" and a["step"] == 0 and a["evidence"]["ratio"] == pytest.approx(32.3, rel=0.05)
    assert "WeightedRandomSampler" in a["fix"] and a["evidence"]["majority_share"] == pytest.approx(0.97, abs=0.01)
    assert "judge the model by other measures" in a["message"]
    collapsed = sim.with_(steps=300, overrides={"acc": lambda s, v: 0.97, "loss": lambda s, v: 0.135})
    a = alerts_of(collapsed)["class_imbalance"]
    assert a["severity"] == "warning" and a["step"] == 0  # it began at step 0, as advice


def test_a_rare_class_among_many_is_worth_knowing():
    shares = (0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05, 0.03, 0.015, 0.005)
    a = alerts_of(Sim(classes=10, class_shares=shares, steps=60))["class_imbalance"]
    assert a["severity"] == "info" and a["evidence"]["ratio"] >= 40 and a["evidence"]["majority_class"] == 0


def test_mild_imbalance_is_not():
    assert "class_imbalance" not in alerts_of(Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss",
                                                  class_shares=(0.8, 0.2), steps=60))


# ---- unshuffled_data ---------------------------------------------------------------------------------

def sorted_batches(step, v):
    return None if v is None else 1.0


def test_batches_of_one_class_from_an_unshuffled_loader():
    sim = Sim(shuffled=False, steps=100, overrides={"batch_top_frac": sorted_batches,
                                                    "batch_top_class": lambda s, v: None if v is None else s // 25})
    a = alerts_of(sim)["unshuffled_data"]
    assert a["step"] <= 8 and a["evidence"]["typical_top_class_share"] == 1.0 and "shuffle=True" in a["fix"]
    assert a["evidence"]["top_class_by_batch"][:4] == [0, 0, 0, 0]


def test_a_shuffling_sampler_is_never_unshuffled():
    sim = Sim(shuffled=True, steps=100, overrides={"batch_top_frac": sorted_batches})
    assert "unshuffled_data" not in alerts_of(sim)


def test_mixed_batches_from_an_unknown_sampler_are_fine():
    assert "unshuffled_data" not in alerts_of(Sim(shuffled=None, steps=100))


# ---- weights_not_updating (set-up causes) -------------------------------------------------------------

def test_an_optimizer_over_another_models_parameters():
    sim = Sim(steps=60, extra_facts={"optimizer": [{"kind": "Adam", "param_groups": [{"lr": 1e-3}], "params": 5764,
                                                    "covers_model": 0.0}]})
    a = alerts_of(sim)["weights_not_updating/optimizer_params"]
    assert a["severity"] == "critical" and a["step"] == 0 and "model.parameters()" in a["fix"]


def test_everything_frozen():
    facts = Sim().facts()["model"]
    sim = Sim(steps=60, extra_facts={"model": {**facts, "trainable_params": 0}})
    assert alerts_of(sim)["weights_not_updating/frozen"]["severity"] == "critical"


def test_a_learning_rate_of_zero():
    a = alerts_of(Sim(steps=60, overrides={"lr": lambda s, v: 0.0}))["weights_not_updating/lr_zero"]
    assert a["step"] <= 16


def test_a_warm_up_from_zero_is_not_a_zero_learning_rate():
    assert "weights_not_updating" not in alerts_of(Sim(steps=200, overrides={"lr": lambda s, v: 1e-5 * s}))


def test_no_optimizer_step_reported_by_the_probe():
    frames = Sim(steps=1).frames(end=False)
    frames.append(wire.envelope("facts", "sim", 0, 99, 0, facts={"pending_loss_calls": 200}))
    d, _ = feed(frames)
    assert fired(d)["weights_not_updating/no_step"]["evidence"]["loss_calls_without_step"] == 200


def test_no_optimizer_step_seen_by_the_end_of_a_run():
    # The probe counts steps by optimizer.step(): a run that never steps shows one step holding every batch.
    sim = Sim(steps=1)
    frames = sim.frames()
    frames[2]["hists"] = {"target": [3300, 3300, 3300, 3300]}
    d, _ = feed(frames)
    a = fired(d)["weights_not_updating/no_step"]
    assert a["evidence"]["loss_calls_without_step"] == 206 and "optimizer.step()" in a["fix"]


def test_a_short_run_that_steps_is_not_missing_its_steps():
    assert "weights_not_updating" not in alerts_of(Sim(steps=1))


def test_silent_on_a_correct_set_up():
    found = alerts_of(Sim(steps=200))
    assert not found, list(found)
    assert math.isfinite(Sim().start_loss)
