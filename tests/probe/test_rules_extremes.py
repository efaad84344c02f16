"""Issue 15 item 7: extremes that a median averages away. The largest loss (and norm before clipping) since the
rules' last look is kept, and the largest so far: a burst between two looks, then a run stuck near chance with
small gradients, is still named as the cause. Item D: the overfitting message says what the training loss did
in numbers."""

import math

from tests.probe.test_rules_streams import Sim
from tests.probe.test_rules_training import CHANCE, run, stuck

RNN = (("rnn", "RNN"), ("head", "Linear"))


def burst(at: int, peak: float):
    """A loss at chance, but for a burst of three steps from `at` (peak, then a third of it, then a tenth)."""
    def loss(s, v):
        if at <= s < at + 3:
            return peak / 3 ** (s - at) if s < at + 2 else peak / 10
        return CHANCE * (1 + 0.03 * math.sin(s))
    return loss


def test_a_loss_burst_between_two_looks_explains_the_stuck_recurrent_run_after_it():
    # Steps 41-43: the first ten losses (steps 0-9) miss it, and by step 48 the median of the window is back at
    # chance. The largest loss since the look at step 40 is kept, and the largest so far.
    sim = Sim(hidden=RNN, output="out", steps=300, overrides=stuck(loss=burst(41, 800.0)))
    found, alerts = run(sim)
    a = found["exploding_gradients"]
    assert a["evidence"]["burst_step"] == 41 and a["evidence"]["loss_peak"] == 800.0
    assert "at step 41" in a["message"]
    # The same run without the burst: stuck, but nothing says gradients exploded.
    assert "exploding_gradients" not in run(Sim(hidden=RNN, output="out", steps=300, overrides=stuck()))[0]


def test_a_loss_spike_in_a_recurrent_run_that_trains_well_raises_nothing():
    sim = Sim(hidden=RNN, output="out", steps=400, overrides={"loss": lambda s, v: 60.0 if s == 141 else v})
    found, _ = run(sim)
    assert not {k for k, a in found.items() if a["severity"] != "info"}, found


def test_a_clipped_norm_burst_between_two_looks_counts_as_growth():
    # Under clip_grad_norm_ the norm before clipping is recorded every step: a 300x burst at steps 43-45 (between
    # the looks at 40 and 48) in a run stuck at chance is growth, whatever the median of the last samples says.
    def preclip(s, v):
        return 400.0 if 43 <= s < 46 else 1.0 + 0.1 * math.sin(s)
    sim = Sim(steps=300, overrides=stuck(grad_norm_preclip=preclip, clip_frac=lambda s, v: 1.0 if 43 <= s < 46 else 0.0))
    found, _ = run(sim)
    a = found["exploding_gradients"]
    assert a["evidence"]["grad_norm_peak"] == 400.0 and a["evidence"]["peak_step"] == 43
    assert "peak" in a["message"]


def test_overfitting_says_what_the_training_loss_did_in_numbers():
    def val(s, v):
        if v is None:
            return None
        epoch = s // 50
        return 0.4 if epoch < 4 else 0.4 * (1 + 0.12 * (epoch - 3))
    found, _ = run(Sim(steps=600, loss_floor=0.0005, final_acc=0.99, overrides={"val_loss": val}))
    msg = found["overfitting"]["message"]
    assert "%: the model" not in msg and "training loss fell from " in msg, msg
