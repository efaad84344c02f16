"""Healthy runs raise nothing at warning or above: the failure of the published detectors, not repeated here.

Each variant is a way healthy training looks unlike a textbook curve: long runs, warm-up, fine-tuning from a
low loss, mixed-precision overflow at the start, skewed classes, plateaus before learning, regression.
"""

from __future__ import annotations

import math

import pytest
from test_rules_streams import Sim, after, feed, fired

pytestmark = pytest.mark.filterwarnings("error")


def assert_quiet(sim: Sim) -> None:
    d, _ = feed(sim.frames())
    loud = fired(d)
    assert not loud, {k: a["message"] for k, a in loud.items()}
    assert not d.errors


def test_a_long_realistic_run_with_every_metric_raises_nothing():
    # 5,000 steps, 20 epochs, noisy batch losses, validation every epoch, per-layer statistics every 8 steps.
    assert_quiet(Sim(steps=5000, epoch_steps=250, tau=400, seed=1))


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_healthy_runs_with_other_noise_raise_nothing(seed):
    assert_quiet(Sim(steps=1500, epoch_steps=100, noise=0.3, seed=seed))


def test_binary_classification_with_logits():
    assert_quiet(Sim(task="binary", classes=2, loss_kind="BCEWithLogitsLoss", final_acc=0.95, steps=800))


def test_regression_has_no_accuracy_and_raises_nothing():
    sim = Sim(task="regression", loss_kind="MSELoss", loss0=4.0, loss_floor=0.2, steps=800,
              targets={"dtype": "float32", "shape": [64, 1], "min": -3.2, "max": 5.7, "distinct": 64,
                       "integral": False},
              predictions={"shape": [64, 1]},
              overrides={"acc": lambda s, v: None, "val_acc": lambda s, v: None, "pred_top_frac": lambda s, v: None,
                         "batch_top_frac": lambda s, v: None, "batch_top_class": lambda s, v: None,
                         "batch_classes": lambda s, v: None})
    assert_quiet(sim)


def test_learning_rate_warm_up_is_not_a_low_learning_rate():
    # Transformers warm up for hundreds of steps: tiny updates and a flat loss while the rate still rises.
    warm = 400

    def lr(step, _):
        return 1e-3 * min(1.0, (step + 1) / warm)

    def ratio(step, v):
        return None if v is None else v * min(1.0, (step + 1) / warm) ** 2

    sim = Sim(steps=1500, epoch_steps=300, tau=200,
              overrides={"lr": lr, "update_ratio": ratio, **{f"update_ratio/{n}": ratio for n in ("0", "2", "4")},
                         "loss": lambda s, v: v if s >= warm else math.log(4) * (1 + 0.05 * math.sin(s))})
    assert_quiet(sim)


def test_fine_tuning_from_a_low_loss():
    # A pretrained model: accurate from the first step, its loss creeping down by a fifth.
    assert_quiet(Sim(loss0=0.45, loss_floor=0.35, steps=1000, tau=300,
                     overrides={"acc": lambda s, v: min(1.0, 0.86 + 0.04 * s / 1000 + 0.03 * math.sin(s)),
                                "val_acc": lambda s, v: None if v is None else 0.87}))


def test_mixed_precision_overflow_at_the_start_is_not_a_nan_loss():
    # GradScaler meets Inf gradients in its first steps, skips them and lowers its scale; the loss stays finite.
    def grads(step, v):
        return math.inf if v is not None and step in (0, 1, 2, 3) else v

    assert_quiet(Sim(overrides={"grad_norm": grads, "nonfinite_grads": lambda s, v: (5.0 if s < 4 else v)
                                if v is not None else None}))


def test_skewed_classes_learned_well():
    assert_quiet(Sim(class_shares=(0.8, 0.2), classes=2, final_acc=0.95, steps=800))


def test_sigmoid_hidden_layers_that_train():
    hidden = (("0", "Linear"), ("1", "Sigmoid"), ("2", "Linear"), ("3", "Tanh"))
    assert_quiet(Sim(hidden=hidden, steps=800))


def test_a_plateau_at_chance_before_learning():
    # The healthy CNN demo sits at chance-level loss for 17 steps (1.3 epochs) before it learns.
    plateau = 17

    def loss(step, v):
        return math.log(4) * (1 + 0.01 * math.sin(step)) if step < plateau else v

    assert_quiet(Sim(epoch_steps=13, steps=100, tau=20, overrides={"loss": loss}))


def test_a_run_without_epochs_or_validation():
    sim = Sim(steps=1200, extra_facts={"epoch_steps": None},
              overrides={"epoch": lambda s, v: None, "val_loss": lambda s, v: None, "val_acc": lambda s, v: None})
    assert_quiet(sim)


def test_a_converged_run_that_trains_on_gets_advice_not_a_warning():
    # Validation flat for the second half of the run: early stopping is worth saying, at info level.
    sim = Sim(steps=3000, epoch_steps=100, tau=30, seed=5)
    flat = sim.smooth_loss(1200) * sim.val_gap
    sim = sim.with_(overrides={"val_loss": lambda s, v: v if v is None or s < 1200 else flat * (1 + 0.002 * math.sin(s))})
    d, _ = feed(sim.frames())
    assert not fired(d)
    stagnating = [a for a in d.alerts() if a["id"] == "val_loss_stagnating"]
    assert stagnating and stagnating[0]["severity"] == "info"


def test_healthy_with_relu_layers_as_dead_as_a_healthy_cnn_early_on():
    # A healthy CNN demo shows 99.7% zeros in a ReLU layer in its first steps, and recovers.
    sim = Sim(steps=600, overrides={"act_zero/3": after(0, lambda s, v: (0.997 if s < 10 else v) if v is not None else None)})
    assert_quiet(sim)


def test_lr_step_decay_and_noisy_late_losses():
    def lr(step, _):
        return 1e-3 * (0.1 if step >= 600 else 1.0)

    assert_quiet(Sim(steps=1200, noise=0.4, overrides={"lr": lr}))


def test_a_sparsely_logged_run_like_an_imported_log():
    # TensorBoard or a Trainer logging every 50 steps: a handful of points, no per-layer statistics, no facts.
    from test_rules_streams import feed as feed_frames

    from accmon.probe import wire

    frames = [wire.envelope("facts", "imp", 0, 1, -1, facts={"framework": "api"})]
    for i, step in enumerate(range(0, 5000, 50)):
        loss = 0.3 + 2.0 * (1 + step / 400) ** -0.7 * (1 + 0.03 * math.sin(step))
        cols = {"loss": [loss], "lr": [3e-4]}
        if step % 500 == 450:
            cols.update(val_loss=[loss * 1.1])
        frames.append(wire.envelope("steps", "imp", 0, i + 2, step, steps=[step], cols=cols))
    d, _ = feed_frames(frames)
    assert not fired(d), [a["message"] for a in d.alerts()]


def test_a_sparsely_logged_loss_that_is_flat_from_the_start_is_still_caught():
    from test_rules_streams import feed as feed_frames

    from accmon.probe import wire

    frames = [wire.envelope("facts", "imp", 0, 1, -1, facts={"framework": "api"})]
    for i, step in enumerate(range(0, 3000, 50)):
        cols = {"loss": [2.3 * (1 + 0.01 * math.sin(step))], "update_ratio": [2e-7]}
        frames.append(wire.envelope("steps", "imp", 0, i + 2, step, steps=[step], cols=cols))
    d, _ = feed_frames(frames)
    assert "lr_too_low" in fired(d)
