"""Issue 15: rules that stay quiet on healthy runs with phases, noisy validation, handled imbalance and
recurrent layers, and that name symmetric weights and a short run that learned only the prior."""

import math

from tests.probe.test_rules_streams import Sim
from tests.probe.test_rules_training import run, stuck


def test_a_new_phase_starts_the_validation_history_again():
    # Pre-training ends at step 300 with validation loss 0.3; fine-tuning a new head starts at 1.36 and falls
    # steadily to 0.14. Compared with the pre-training best, it would never "improve".
    def val(s, v):
        if v is None:
            return None
        return 0.3 + 0.0001 * s if s < 300 else 1.36 * math.exp(-(s - 300) / 150) + 0.1
    sim = Sim(steps=900, overrides={"val_loss": val}, extra_facts={"phases": [{"start": 300, "why": "a new optimizer took over"}]})
    found = run(sim)[0]
    assert "val_loss_stagnating" not in found and "overfitting" not in found
    # Without the phase, the same curve is read as one run that stopped improving.
    assert {"val_loss_stagnating", "overfitting"} & set(run(Sim(steps=900, overrides={"val_loss": val}))[0])


def test_a_validation_bump_of_one_or_two_evaluations_is_not_overfitting():
    def val(s, v):
        if v is None:
            return None
        epoch = s // 50
        base = 0.5 * math.exp(-epoch / 3) + 0.2
        return base * (1.35 if epoch in (6, 7) else 1.0)  # a OneCycle peak: up 35%, then back
    found, alerts = run(Sim(steps=600, overrides={"val_loss": val}))
    assert not [a for a in alerts if a["id"] == "overfitting"]


def test_a_near_zero_validation_loss_that_doubles_is_not_overfitting():
    def val(s, v):
        if v is None:
            return None
        epoch = s // 50
        return 0.013 if epoch < 5 else 0.013 + 0.001 * (epoch - 4)
    assert "overfitting" not in run(Sim(steps=600, final_acc=0.997, overrides={"val_loss": val}))[0]


def test_a_near_zero_training_loss_that_quadruples_is_not_diverging():
    # A GRU at 95%: its loss moves 0.02 -> 0.09, recurrent layers' gradients 15x the output layer's.
    hidden = (("rnn", "GRU"), ("head", "Linear"))
    sim = Sim(hidden=hidden, output="out", steps=400, final_acc=0.95, loss_floor=0.02,
              overrides={"loss": lambda s, v: v if s < 300 else 0.09 * (1 + 0.1 * math.sin(s)),
                         "grad_norm/rnn": lambda s, v: None if v is None else 15.0,
                         "grad_norm/head": lambda s, v: None if v is None else 1.0,
                         "grad_norm/out": lambda s, v: None if v is None else 1.0})
    found = run(sim)[0]
    assert "exploding_gradients" not in found and "lr_too_high" not in found


def test_skewed_classes_under_class_weights_are_not_at_chance():
    # 85/10/5 with a weighted loss: accuracy under the majority's share, balanced accuracy high.
    sim = Sim(classes=3, class_shares=(0.85, 0.10, 0.05), steps=600,
              extra_facts={"loss": {"kind": "CrossEntropyLoss", "reduction": "mean", "via": "module",
                                    "class_weights": [0.39, 3.3, 6.6]}},
              overrides={"acc": lambda s, v: 0.80 + 0.03 * math.sin(s),
                         "val_acc": lambda s, v: None if v is None else 0.86,
                         "pred_top_frac": lambda s, v: None if v is None else 0.75,
                         "batch_bal_acc": lambda s, v: None if s % 8 else 0.82})
    found = run(sim)[0]
    for alert in ("accuracy_stuck", "single_class_prediction"):
        assert alert not in found
    assert found.get("class_imbalance", {}).get("severity", "info") == "info"


def test_all_equal_hidden_weights_are_the_symmetry_problem_not_a_high_rate():
    layers = [{"name": "0", "kind": "Linear", "params": 1000, "trainable": True, "constant_weight": True},
              {"name": "1", "kind": "Tanh", "params": 0, "trainable": False},
              {"name": "2", "kind": "Linear", "params": 1000, "trainable": True, "constant_weight": True},
              {"name": "3", "kind": "Tanh", "params": 0, "trainable": False},
              {"name": "4", "kind": "Linear", "params": 260, "trainable": True, "constant_weight": False}]
    hidden = (("0", "Linear"), ("1", "Tanh"), ("2", "Linear"), ("3", "Tanh"))
    sim = Sim(hidden=hidden, steps=300, overrides=stuck(**{"update_ratio": lambda s, v: None if v is None else 0.16}),
              extra_facts={"model": {"name": "Sequential", "params": 2260, "trainable_params": 2260, "layers": layers,
                                     "output_activation": "none", "compiled": False}})
    found = run(sim)[0]
    assert found["weights_not_updating/symmetric"]["evidence"]["layers"] == ["0", "2"]
    assert "lr_too_high" not in found


def test_a_short_run_that_learned_only_the_prior_is_named_at_its_end():
    # 75 steps, 90% negatives: accuracy at the majority's share throughout while the loss falls (the bias).
    sim = Sim(classes=2, task="binary", loss_kind="BCEWithLogitsLoss", class_shares=(0.9, 0.1), steps=75,
              epoch_steps=75, batch=16,
              overrides={"acc": lambda s, v: 0.9, "pred_top_frac": lambda s, v: None if v is None else 1.0,
                         "batch_bal_acc": lambda s, v: None if v is None else 0.5})
    found = run(sim)[0]
    assert "single_class_prediction" in found


def test_skewed_classes_told_apart_by_balanced_accuracy_are_not_stuck_at_the_majority_share():
    # healthy_weighted_imbalance: 94/6 classes under a class-weighted loss; validation accuracy at the majority's
    # share (0.94), the top predicted class's share of a batch around it too (noisy at every step), but balanced
    # accuracy over the sampled batches 0.9: the classes are told apart. Not accuracy_stuck, at any cadence.
    def bal(s, v):
        return None if v is None else 0.9 + 0.02 * math.sin(s)

    for every in (1, 4, 16):
        sim = Sim(classes=2, task="binary", class_shares=(0.94, 0.06), steps=300, final_acc=0.95, sample_every=every,
                  overrides={"batch_bal_acc": lambda s, v, k=every: bal(s, 1.0 if s < 8 or s % k == 0 else None),
                             "val_acc": lambda s, v: None if v is None else 0.9395})
        found = run(sim)[0]
        assert "accuracy_stuck" not in found, (every, found)
