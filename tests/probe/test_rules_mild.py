"""Milder faults (issue 4) and the healthy runs that look like them: each rule change has a test that it finds the
fault and one that it stays quiet on the look-alike (the demos behind them: demos/README.md)."""

from __future__ import annotations

import math

from test_rules_streams import Sim, feed, fired


def alerts(sim: Sim, frames: list | None = None) -> dict:
    d, _ = feed(frames if frames is not None else sim.frames())
    assert not d.errors
    return fired(d, ("info", "warning", "critical"))


def loud(sim: Sim) -> dict:
    return {k: a for k, a in alerts(sim).items() if a["severity"] != "info"}


# ---- unshuffled_data: batches holding 2 of 10 classes ----------------------------------------------------------
def pairs(step, v):
    return None if v is None else 0.5 + 0.03 * math.sin(step)


def test_batches_of_two_of_ten_classes_are_unshuffled():
    a = alerts(Sim(classes=10, shuffled=False, steps=200, overrides={"batch_top_frac": pairs}))["unshuffled_data"]
    assert a["severity"] == "warning" and a["step"] <= 40


def test_shuffled_batches_of_ten_classes_are_not():
    # A shuffled batch of 64 from 10 classes: the top class takes 0.15-0.2 (about two standard errors above 0.1).
    shuffled = {"batch_top_frac": lambda s, v: None if v is None else 0.17 + 0.03 * math.sin(s)}
    assert "unshuffled_data" not in alerts(Sim(classes=10, shuffled=None, steps=400, overrides=shuffled))


def test_two_of_four_classes_per_batch_stays_under_the_bar_for_small_batches():
    # Batches of 8: a class's share in a random batch varies by 0.15, so 0.5 proves nothing.
    sim = Sim(classes=4, batch=8, shuffled=None, steps=300, overrides={"batch_top_frac": pairs})
    assert "unshuffled_data" not in alerts(sim)


# ---- class imbalance handled with a weighted loss ---------------------------------------------------------------
def skewed(pred_top: float) -> Sim:
    # 94/6, accuracy ends at the majority's share (a weighted loss trades it for minority recall), loss falls.
    return Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss", class_shares=(0.94, 0.06), final_acc=0.95,
               steps=400, overrides={"pred_top_frac": lambda s, v: None if v is None else pred_top})


def test_a_weighted_loss_on_skewed_classes_is_not_stuck_at_chance():
    assert loud(skewed(0.89)) == {}


def test_a_model_that_answers_the_majority_every_time_still_is():
    found = loud(skewed(1.0))
    assert {"accuracy_stuck", "single_class_prediction"} <= set(found)


# ---- lr_too_low: not for a model already good -------------------------------------------------------------------
def flat(acc: float) -> Sim:
    # The loss hardly moves (a fine-tune from a good checkpoint, or a rate far too low) and updates are tiny.
    return Sim(loss0=0.30, loss_floor=0.29, final_acc=acc, steps=400,
               overrides={"acc": lambda s, v: acc + 0.02 * math.sin(s), "update_ratio": lambda s, v: None if v is None else 2e-5,
                          **{f"update_ratio/{n}": (lambda s, v: None if v is None else 2e-5) for n in ("0", "2", "4")}})


def test_fine_tuning_at_high_accuracy_is_not_lr_too_low():
    assert "lr_too_low" not in alerts(flat(0.93))


def test_tiny_updates_at_chance_still_are():
    sim = flat(0.25).with_(loss0=math.log(4), loss_floor=math.log(4) - 0.01)
    assert alerts(sim)["lr_too_low"]["severity"] == "warning"


# ---- lr_too_high: learned, then lost it --------------------------------------------------------------------------
def bounce(step: int, v):
    # Falls to 0.6 by step 40, then climbs back to 1.1 (above where it started) and stays: never doubled.
    base = 0.6 + 0.8 * math.exp(-step / 4) if step < 40 else min(1.1, 0.6 + (step - 40) * 0.012)
    return base * (1 + 0.05 * math.sin(step))


def regressing(update: float) -> Sim:
    def rate(s: int, v: float | None) -> float | None:
        return None if v is None else update

    return Sim(steps=300, epoch_steps=25, overrides={"loss": bounce, "update_ratio": rate,
                                                     **{f"update_ratio/{n}": rate for n in ("0", "2", "4")},
                                                     "acc": lambda s, v: 0.8 if s < 60 else 0.27})


def test_a_run_that_learned_then_lost_it_with_large_steps_is_lr_too_high():
    a = alerts(regressing(0.05))["lr_too_high"]
    assert a["severity"] == "warning" and "climbed back" in a["message"] and a["evidence"]["loss_best"] < 1.0


def test_the_same_curve_with_small_steps_is_not():
    assert "lr_too_high" not in alerts(regressing(0.004))


# ---- weights_not_updating: a layer replaced after the optimizer was built -------------------------------------
def optimizer(covers: float, held: int) -> Sim:
    sim = Sim(steps=60)
    params = sim.facts()["model"]["trainable_params"]
    return sim.with_(extra_facts={"optimizer": [{"kind": "Adam", "param_groups": [{"lr": 1e-3}],
                                                 "params": held if held >= 0 else round(covers * params),
                                                 "covers_model": covers}]})


def test_a_new_head_missing_from_the_optimizer_is_found():
    # Covering 95% and holding nothing else is a deliberate subset; holding the replaced layer's parameters is not.
    assert "weights_not_updating" not in alerts(optimizer(0.95, held=-1))
    sim = Sim(steps=60)
    params = sim.facts()["model"]["trainable_params"]
    a = alerts(optimizer(0.95, held=params))["weights_not_updating"]
    assert a["severity"] == "warning" and a["cause"] == "optimizer_params"
    assert a["evidence"]["missing_params"] == round(0.05 * params) and a["evidence"]["stale_params"] > 0


def test_an_optimizer_over_the_head_only_is_a_choice():
    assert "weights_not_updating" not in alerts(optimizer(0.05, held=-1))


def test_an_optimizer_over_none_of_the_model_stays_critical():
    assert alerts(optimizer(0.0, held=1000))["weights_not_updating"]["severity"] == "critical"


def test_spread_predictions_that_lose_accuracy_are_not_a_handled_imbalance():
    # Predictions spread over both classes at random: accuracy 0.5 on 94/6 data is no trade, it is guessing.
    sim = skewed(0.5).with_(overrides={"pred_top_frac": lambda s, v: None if v is None else 0.5,
                                       "acc": lambda s, v: 0.5, "val_acc": lambda s, v: None if v is None else 0.5})
    assert "accuracy_stuck" in loud(sim)


def test_few_classes_per_batch_are_unshuffled_even_when_the_counts_seen_are_skewed():
    # Unshuffled pairs: the class counts seen so far are those of the first classes (here 35/35/10/10/10), which
    # hides the top share (0.5 is under the bar for a "majority" of 0.35); each batch holding 2 classes where a
    # random one would hold 5 does not.
    sim = Sim(classes=10, shuffled=False, steps=200, class_shares=(0.35, 0.35, 0.1, 0.1, 0.1) + (0.0,) * 5,
              overrides={"batch_top_frac": pairs, "batch_classes": lambda s, v: None if v is None else 2,
                         "acc": lambda s, v: 0.5})
    a = alerts(sim)["unshuffled_data"]
    assert a["evidence"]["typical_classes_per_batch"] == 2 and a["evidence"]["expected_classes_per_batch"] >= 3


def test_batches_holding_every_class_are_not():
    sim = Sim(classes=10, shuffled=None, steps=200, class_shares=(0.35, 0.35, 0.1, 0.1, 0.1) + (0.0,) * 5,
              overrides={"batch_top_frac": pairs, "batch_classes": lambda s, v: None if v is None else 5,
                         "acc": lambda s, v: 0.5})
    assert "unshuffled_data" not in alerts(sim)
