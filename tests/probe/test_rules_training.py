"""Dynamic rules: faults that show in how training goes. Each fires when its evidence meets a run in trouble,
stays silent when the same evidence comes with a run that learns (the gate), and clears when the trouble ends."""

from __future__ import annotations

import math

import pytest
from test_rules_streams import Sim, constant, feed, fired

CHANCE = math.log(4)


def stuck(**overrides) -> dict:
    """Overrides for a run that learns nothing: loss at chance level, accuracy at chance."""
    return {"loss": lambda s, v: CHANCE * (1 + 0.03 * math.sin(s)), "acc": lambda s, v: 0.25 + 0.02 * math.sin(s * 0.7),
            "val_loss": lambda s, v: None if v is None else CHANCE, "val_acc": lambda s, v: None if v is None else 0.25,
            **overrides}


def run(sim: Sim) -> tuple[dict, list]:
    d, changed = feed(sim.frames())
    return fired(d, ("info", "warning", "critical")), d.alerts()


def only(alerts: list, alert_id: str) -> dict:
    (a,) = [a for a in alerts if a["id"] == alert_id]
    return a


# ---- nan_loss ----------------------------------------------------------------------------------------

def test_a_nan_loss_is_critical_at_the_step_it_happens():
    found, _ = run(Sim(steps=300, overrides={"loss": lambda s, v: math.nan if s >= 123 else v}))
    a = found["nan_loss/loss"]
    assert a["severity"] == "critical" and a["step"] == 123 and a["evidence"]["first_step"] == 123
    assert a["evidence"]["last_finite_loss"] > 0 and "clip_grad_norm_" in a["fix"]


def test_an_infinite_loss_too():
    found, _ = run(Sim(steps=200, overrides={"loss": lambda s, v: math.inf if s >= 50 else v}))
    assert "Inf" in found["nan_loss/loss"]["message"]


def test_nan_gradients_when_the_loss_itself_is_not_captured():
    # A hand-written loss the probe cannot see: the gradients still tell.
    nan_grads = lambda s, v: None if v is None else (math.nan if s >= 40 else v)  # noqa: E731
    sim = Sim(steps=200, overrides={"loss": lambda s, v: None, "acc": lambda s, v: None, "grad_norm": nan_grads,
                                    "nonfinite_grads": lambda s, v: None if v is None else (5760 if s >= 40 else 0)})
    a = run(sim)[0]["nan_loss/grads"]
    assert a["severity"] == "critical" and a["step"] == 40


def test_a_nan_validation_loss():
    found, _ = run(Sim(steps=300, overrides={"val_loss": lambda s, v: None if v is None else (math.nan if s > 150 else v)}))
    assert found["nan_loss/val_loss"]["severity"] == "warning"


def test_a_loss_that_recovers_clears():
    _, alerts = run(Sim(steps=400, overrides={"loss": lambda s, v: math.nan if 100 <= s < 105 else v}))
    a = only(alerts, "nan_loss")
    assert a["state"] == "cleared" and a["cleared_step"] > 105


def test_after_a_nan_the_other_statistics_are_not_diagnosed():
    dead = constant(1.0)
    sim = Sim(steps=400, overrides={"loss": lambda s, v: math.nan if s >= 20 else v, "act_zero/1": dead,
                                    "acc": lambda s, v: 0.25})
    found, _ = run(sim)
    assert "nan_loss" in found and "dead_relu" not in found and "weights_not_updating" not in found


# ---- exploding_gradients -----------------------------------------------------------------------------

def growing_toward_input(factor: float):
    # Layers 0, 2, 4 (input to output): the input side gets `factor` times the output side's gradient.
    return {"grad_norm/0": lambda s, v: None if v is None else factor,
            "grad_norm/2": lambda s, v: None if v is None else math.sqrt(factor),
            "grad_norm/4": lambda s, v: None if v is None else 1.0}


def test_gradients_growing_toward_the_input_while_the_loss_is_worse_than_chance():
    sim = Sim(steps=300, overrides={**growing_toward_input(30.0), "loss": lambda s, v: 2.6 * CHANCE * (1 + 0.1 * math.sin(s)),
                                    "acc": lambda s, v: 0.27})
    a = run(sim)[0]["exploding_gradients"]
    assert a["evidence"]["input_to_output_ratio"] == pytest.approx(30) and a["evidence"]["input_layer"] == "0"
    assert a["step"] <= 56 and a["severity"] == "warning" and "clip_grad_norm_" in a["fix"]


def test_a_gradient_norm_that_grew_a_thousandfold():
    growth = lambda s, v: None if v is None else 1.0 * 10 ** (s / 60)  # noqa: E731
    sim = Sim(steps=300, overrides={"grad_norm": growth, "loss": lambda s, v: CHANCE * (1 + s / 60)})
    a = run(sim)[0]["exploding_gradients"]
    assert a["evidence"]["growth_since_start"] >= 100 and "zero_grad" in a["fix"]


def test_large_input_side_gradients_in_a_run_that_learns_are_not():
    assert "exploding_gradients" not in run(Sim(steps=600, overrides=growing_toward_input(30.0)))[0]


def test_exploding_clears_once_the_loss_comes_down():
    loss = lambda s, v: 2.6 * CHANCE if s < 150 else 0.3 * (1 + 0.1 * math.sin(s))  # noqa: E731
    acc = lambda s, v: 0.27 if s < 150 else 0.9  # noqa: E731
    _, alerts = run(Sim(steps=400, overrides={**growing_toward_input(30.0), "loss": loss, "acc": acc}))
    assert only(alerts, "exploding_gradients")["state"] == "cleared"


# ---- vanishing_gradients -----------------------------------------------------------------------------

def shrinking_toward_input():
    return {"grad_norm/0": lambda s, v: None if v is None else 2e-9,
            "grad_norm/2": lambda s, v: None if v is None else 3e-5,
            "grad_norm/4": lambda s, v: None if v is None else 0.4}


def test_vanishing_gradients_name_the_layers_and_by_how_much():
    a = run(Sim(steps=300, overrides=stuck(**shrinking_toward_input())))[0]["vanishing_gradients"]
    assert set(a["evidence"]["layers"]) == {"0", "2"} and a["evidence"]["layers"]["0"] == pytest.approx(5e-9)
    assert a["evidence"]["output_layer"] == "4" and a["step"] <= 112 and "ReLU" in a["fix"]


def test_small_early_layer_gradients_in_a_learning_run_are_not():
    assert "vanishing_gradients" not in run(Sim(steps=600, overrides=shrinking_toward_input()))[0]


def test_zero_gradients_behind_dead_relus_are_the_dead_relus_finding():
    dead = constant(1.0)
    found, _ = run(Sim(steps=300, overrides=stuck(**{"act_zero/1": dead, "act_zero/3": dead,
                                                     "grad_norm/0": constant(0.0), "grad_norm/2": constant(0.0)})))
    assert "dead_relu" in found and "vanishing_gradients" not in found


# ---- dead_relu ---------------------------------------------------------------------------------------

def test_dead_relus_in_a_stuck_run():
    dead = {"act_zero/1": constant(0.98), "act_zero/3": constant(1.0)}
    a = run(Sim(steps=300, overrides=stuck(**dead)))[0]["dead_relu"]
    assert a["severity"] == "critical" and a["evidence"]["layers"] == {"1": 0.98, "3": 1.0}
    assert a["step"] == 104 and "LeakyReLU" in a["fix"]  # two epochs of 50 steps: the patience


def test_mostly_zero_relus_are_a_warning():
    a = run(Sim(steps=300, overrides=stuck(**{"act_zero/1": constant(0.8)})))[0]["dead_relu"]
    assert a["severity"] == "warning" and a["evidence"]["layers"] == {"1": 0.8}


def test_sparse_relus_in_a_learning_run_are_healthy():
    assert "dead_relu" not in run(Sim(steps=600, overrides={"act_zero/1": constant(0.85)}))[0]


def test_dead_relus_clear_when_the_run_starts_learning():
    loss = lambda s, v: CHANCE if s < 200 else 0.3  # noqa: E731
    acc = lambda s, v: 0.25 if s < 200 else 0.9  # noqa: E731
    _, alerts = run(Sim(steps=400, overrides={"act_zero/1": constant(1.0), "loss": loss, "acc": acc}))
    a = only(alerts, "dead_relu")
    assert a["state"] == "cleared" and 200 < a["cleared_step"] <= 240


# ---- sigmoid_saturation ------------------------------------------------------------------------------

SIGMOID = (("0", "Linear"), ("1", "Sigmoid"), ("2", "Linear"), ("3", "Tanh"))


def test_saturated_hidden_sigmoids_in_a_stuck_run():
    sim = Sim(hidden=SIGMOID, steps=300, overrides=stuck(**{"act_sat/1": constant(0.8)}))
    a = run(sim)[0]["sigmoid_saturation"]
    assert a["evidence"]["layers"] == {"1": 0.8} and a["evidence"]["kinds"] == {"1": "Sigmoid"}


def test_a_confident_output_sigmoid_is_not_saturation():
    hidden = (("0", "Linear"), ("1", "ReLU"), ("2", "Linear"), ("3", "ReLU"))
    sim = Sim(hidden=hidden, output="4", steps=300, overrides=stuck(**{"act_sat/4": lambda s, v: None if s % 8 else 0.99}))
    # Layer 4 is the model's last layer: its outputs pinned near 0/1 are confident answers.
    assert "sigmoid_saturation" not in run(sim)[0]


def test_a_softmax_applied_as_a_function_is_never_a_saturated_sigmoid():
    # Keras Dense(4, activation="softmax") on the torch backend: the probe sees the softmax function inside the
    # output layer (`4.softmax`); an attention softmax inside a hidden module (`1.softmax`) is no sigmoid either.
    hidden = (("0", "Linear"), ("1", "ReLU"), ("2", "Linear"), ("3", "ReLU"))
    peaked = lambda s, v: None if s % 8 else 0.99  # noqa: E731
    sim = Sim(hidden=hidden, output="4", steps=300, overrides=stuck(**{"act_sat/4.softmax": peaked, "act_sat/1.softmax": peaked}))
    assert "sigmoid_saturation" not in run(sim)[0]
    sim = Sim(hidden=hidden, output="4", steps=300, overrides=stuck(**{"act_sat/1.sigmoid": peaked}))
    assert run(sim)[0]["sigmoid_saturation"]["evidence"]["layers"] == {"1.sigmoid": 0.99}


def test_saturation_grown_in_a_learning_run_is_not_flagged():
    # Long training grows the weights and pins units near their limits; the run learns all the same.
    grown = lambda s, v: min(0.9, s / 300)  # noqa: E731
    assert "sigmoid_saturation" not in run(Sim(hidden=SIGMOID, steps=600, overrides={"act_sat/1": grown}))[0]


def test_saturation_from_the_first_steps_that_recovers_is_not_flagged():
    recovers = lambda s, v: 0.8 if s < 40 else 0.1  # noqa: E731
    assert "sigmoid_saturation" not in run(Sim(hidden=SIGMOID, steps=600, overrides={"act_sat/1": recovers}))[0]


def test_a_layer_saturated_by_its_initialisation_is_flagged_in_a_learning_run():
    # One layer started with far too large weights: most of its units pass no gradient for the whole run, while
    # the others carry the learning (the fault_sigmoid_saturation_one_layer demo: 92% validation accuracy).
    a = run(Sim(hidden=SIGMOID, steps=600, overrides={"act_sat/1": constant(0.72)}))[0]["sigmoid_saturation"]
    assert a["severity"] == "warning" and a["evidence"]["layers"] == {"1": 0.72}
    assert a["evidence"]["since_step"] == 0 and 64 <= a["step"] <= 80
    assert "since the first steps" in a["message"]


# ---- lr_too_high -------------------------------------------------------------------------------------

def test_large_updates_and_a_diverging_loss():
    big = {"update_ratio": constant(0.6), "lr": lambda s, v: 3.0,
           "loss": lambda s, v: v if s < 100 else v * (1 + (s - 100) / 20)}
    a = run(Sim(steps=300, overrides=big))[0]["lr_too_high"]
    assert a["evidence"]["update_ratio"] == pytest.approx(0.6) and a["evidence"]["lr"] == 3.0
    assert "lower the learning rate" in a["fix"] and "(lr 3)" in a["fix"]


@pytest.mark.parametrize("ratio, words", [(587913.96, "by over 1,000× their size"), (58.3, "by 58× their size"),
                                          (0.6, "by 60% of their size")])
def test_the_size_of_the_updates_reads_at_a_glance(ratio, words):
    # Issue 21 item 12: a diverged run read "each step changes the weights by 58791396% of their size".
    big = {"update_ratio": constant(ratio), "lr": lambda s, v: 3.0,
           "loss": lambda s, v: v if s < 100 else v * (1 + (s - 100) / 20)}
    a = run(Sim(steps=300, overrides=big))[0]["lr_too_high"]
    assert f"each step changes the weights {words}" in a["message"], a["message"]
    assert "%" not in a["message"] or ratio < 10


def test_large_updates_while_stuck_at_chance():
    a = run(Sim(steps=300, overrides=stuck(update_ratio=constant(0.4))))[0]["lr_too_high"]
    assert a["step"] <= 112


def test_large_early_updates_in_a_learning_run_are_normal():
    assert "lr_too_high" not in run(Sim(steps=600, overrides={"update_ratio": constant(0.3)}))[0]


# ---- lr_too_low --------------------------------------------------------------------------------------

TINY = {f"update_ratio/{n}": constant(3e-7) for n in ("0", "2", "4")}


def test_tiny_updates_and_a_loss_that_does_not_move():
    a = run(Sim(steps=300, lr=1e-6, overrides=stuck(**TINY, lr=lambda s, v: 1e-6)))[0]["lr_too_low"]
    assert a["evidence"]["largest_update_ratio"] == pytest.approx(3e-7) and "raise the learning rate" in a["fix"]


def test_tiny_updates_while_the_loss_falls_are_fine():
    assert "lr_too_low" not in run(Sim(steps=600, overrides=TINY))[0]


def test_one_dead_layer_does_not_make_the_rate_look_low():
    mixed = {"update_ratio/0": constant(0.0), "update_ratio/2": constant(0.0), "update_ratio/4": constant(7e-4)}
    assert "lr_too_low" not in run(Sim(steps=300, overrides=stuck(**mixed)))[0]


# ---- weights_not_updating (while training) -----------------------------------------------------------

def test_weights_that_never_change():
    zero = {"update_ratio": constant(0.0), **{f"update_ratio/{n}": constant(0.0) for n in ("0", "2", "4")}}
    a = run(Sim(steps=200, overrides=stuck(**zero)))[0]["weights_not_updating/unchanged"]
    assert a["severity"] == "critical" and a["step"] <= 8


@pytest.mark.parametrize("every", [1, 4, 16])
def test_a_few_still_steps_before_the_loss_goes_nan_are_not_weights_not_updating(every):
    # lr=3: the ReLUs die and the weights stand still for a few steps, then the loss is NaN. The finding is the
    # rate (lr_too_high, nan_loss), at every sampling cadence alike, not weights that never update.
    still = lambda s, v: 0.0 if 14 <= s < 21 else (float("nan") if s >= 21 else 2.0)  # noqa: E731
    nan = lambda s, v: float("nan") if s >= 21 else v * (1 + s)  # noqa: E731
    sim = Sim(steps=120, sample_every=every, overrides={"update_ratio": still, "loss": nan})
    assert not [k for k in run(sim)[0] if k.startswith("weights_not_updating")]


# ---- accuracy_stuck ----------------------------------------------------------------------------------

def test_accuracy_at_chance_says_so():
    a = run(Sim(steps=300, overrides=stuck()))[0]["accuracy_stuck/chance"]
    assert a["step"] == 104 and "4 classes" in a["message"] and a["evidence"]["chance"] == 0.25


def test_accuracy_at_zero():
    a = run(Sim(steps=300, overrides=stuck(acc=lambda s, v: 0.0)))[0]["accuracy_stuck/zero"]
    assert "never match" in a["message"]


def test_accuracy_flat_above_chance():
    flat = {"loss": lambda s, v: 0.9 * (1 + 0.02 * math.sin(s)), "acc": lambda s, v: 0.6 + 0.002 * math.sin(s)}
    assert "accuracy_stuck/flat" in run(Sim(steps=300, overrides=flat))[0]


def test_accuracy_that_starts_rising_clears():
    acc = lambda s, v: 0.25 if s < 200 else 0.8  # noqa: E731
    loss = lambda s, v: CHANCE if s < 200 else 0.5  # noqa: E731
    _, alerts = run(Sim(steps=400, overrides={"acc": acc, "loss": loss}))
    a = only(alerts, "accuracy_stuck")
    assert a["cause"] == "chance" and a["state"] == "cleared" and a["cleared_step"] <= 240


# ---- single_class_prediction -------------------------------------------------------------------------

def test_one_class_for_every_sample():
    a = run(Sim(steps=300, overrides=stuck(pred_top_frac=constant(1.0))))[0]["single_class_prediction"]
    assert a["evidence"]["top_prediction_share"] == 1.0


def test_the_majority_class_every_time_on_skewed_data():
    # Predictions are not sampled late in the run; accuracy pinned at the 97% majority share says it.
    sim = Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss", class_shares=(0.97, 0.03), steps=300,
              overrides={"acc": lambda s, v: 0.97 - 0.3 * math.exp(-s / 10),
                         "loss": lambda s, v: (0.14 + 0.55 * math.exp(-s / 10)) * (1 + 0.05 * math.sin(s)),
                         "pred_top_frac": lambda s, v: 0.6 if s < 8 else None})
    found, _ = run(sim)
    assert "single_class_prediction" in found and found["class_imbalance"]["severity"] == "warning"


def test_an_untrained_model_answering_one_class_at_first_is_fine():
    assert "single_class_prediction" not in run(Sim(steps=400, overrides={
        "pred_top_frac": lambda s, v: 1.0 if s < 16 else v}))[0]


# ---- overfitting and val_loss_stagnating -------------------------------------------------------------

def test_validation_loss_turning_up_while_training_loss_falls():
    def val(step, v):
        if v is None:
            return None
        epoch = step // 50
        return 0.9 - 0.01 * epoch if epoch <= 3 else 0.87 * (1 + 0.12 * (epoch - 3))

    a = run(Sim(steps=600, overrides={"val_loss": val}))[0]["overfitting"]
    assert a["evidence"]["best_step"] == 199 and a["evidence"]["rise"] >= 0.2
    assert a["step"] <= 400 and "early stopping" in a["fix"] and "199" in a["fix"]


def test_validation_loss_that_comes_back_clears_overfitting():
    def val(step, v):
        if v is None:
            return None
        epoch = step // 50
        return 1.3 if 4 <= epoch <= 6 else 0.9

    _, alerts = run(Sim(steps=600, overrides={"val_loss": val}))
    assert only(alerts, "overfitting")["state"] == "cleared"


def test_a_plateau_that_drifts_up_is_a_warning():
    sim = Sim(steps=1200, epoch_steps=50, overrides={
        "val_loss": lambda s, v: None if v is None else (0.6 + 0.3 * (300 - s) / 300 if s < 300
                                                         else 0.6 * (1 + 0.01 * (s - 300) / 50))})
    a = run(sim)[0]["val_loss_stagnating"]
    assert a["severity"] == "warning" and a["evidence"]["drift"] >= 0.05 and "ReduceLROnPlateau" in a["fix"]


def test_a_run_that_never_learned_is_stuck_not_on_a_plateau():
    found, _ = run(Sim(steps=1000, overrides=stuck()))
    assert "val_loss_stagnating" not in found and "accuracy_stuck" in found


def test_a_validation_loss_still_improving_is_no_plateau():
    assert "val_loss_stagnating" not in run(Sim(steps=1500, epoch_steps=50, tau=200))[0]


def test_a_rate_that_blows_the_loss_up_at_once_and_kills_the_relus():
    # The lr=3 demo: the loss explodes in its first steps, the ReLUs die, updates stop, then the loss goes NaN.
    def loss(s, v):
        return 1.4 * 10 ** min(s, 12) if s < 12 else (1.4 if s < 40 else math.nan)

    def ratio(s, v):
        return None if v is None else (0.5 * 10 ** min(s, 6) if s < 10 else 0.0)

    sim = Sim(steps=200, lr=3.0, overrides={"loss": loss, "update_ratio": ratio, "lr": lambda s, v: 3.0,
                                            "act_zero/1": lambda s, v: None if v is None else (0.97 if s > 4 else v),
                                            "acc": lambda s, v: 0.25})
    found, alerts = run(sim)
    a = found["lr_too_high"]
    assert a["step"] <= 16 and a["evidence"]["update_ratio"] >= 0.1
    assert "nan_loss" in found and "dead_relu" not in found and "weights_not_updating" not in found
    assert only(alerts, "lr_too_high")["state"] == "active"  # dead layers that stopped moving do not clear it


def test_labels_memorised_not_learned_show_in_validation_accuracy():
    # Random labels: training accuracy creeps up by memorising, validation accuracy stays at chance.
    sim = Sim(steps=300, overrides={"acc": lambda s, v: 0.25 + 0.3 * s / 300, "loss": lambda s, v: CHANCE * (1 - 0.2 * s / 300),
                                    "val_acc": lambda s, v: None if v is None else 0.24,
                                    "val_loss": lambda s, v: None if v is None else CHANCE * 1.05})
    a = run(sim)[0]["accuracy_stuck/chance"]
    assert a["message"].startswith("validation accuracy is stuck at chance") and a["evidence"]["judged_on"] == "validation accuracy"


def test_at_chance_on_skewed_classes_does_not_flicker_with_batch_noise():
    # 97.5% majority: 10% of the way to perfect is 0.25 points, less than the noise of a mean over 13 batches.
    import random

    rng = random.Random(3)
    sim = Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss", class_shares=(0.975, 0.025), steps=600,
              epoch_steps=26, overrides={"acc": lambda s, v: sum(rng.random() < 0.975 for _ in range(64)) / 64,
                                         "loss": lambda s, v: 0.12 * (1 + 0.1 * math.sin(s)),
                                         "pred_top_frac": lambda s, v: None if v is None else 1.0})
    _, changed = feed(sim.frames())
    states = [(a["id"], a["state"]) for a in changed if a["id"] in ("accuracy_stuck", "single_class_prediction")]
    assert states.count(("single_class_prediction", "active")) == 1 and ("single_class_prediction", "cleared") not in states
