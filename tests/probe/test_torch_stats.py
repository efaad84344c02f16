"""The probe's device-side statistics against straightforward reference computations, and the ledger that
brings them home (accmon.probe.torch: classify, activations, inputs, layers, ledger, cadence)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from accmon.probe.torch import activations as A  # noqa: E402
from accmon.probe.torch import classify as C  # noqa: E402
from accmon.probe.torch import inputs as I  # noqa: E402
from accmon.probe.torch import layers as Ly  # noqa: E402
from accmon.probe.torch import losses as L  # noqa: E402
from accmon.probe.torch.cadence import MAX_EVERY, WARMUP_STEPS, Cadence, interval_at  # noqa: E402
from accmon.probe.torch.ledger import Ledger, Row, decode_rows  # noqa: E402


def flush(rows):
    """Decode rows the way a flush does; returns (steps, cols, hists)."""
    out = []
    led = Ledger(lambda steps, cols, hists, times: out.append((steps, cols, hists)))
    for r in rows:
        led.append(r)
    led.drain()
    assert len(out) == 1
    return out[0]


def acc_of(rule, output, target, ignore=None):
    pred, true = C.classes(rule, output, target)
    part, total = C.accuracy_part(rule, pred, true, ignore)
    rows = [Row(0)]
    rows[0].add(C.AccuracyDecoder(), part, total)
    return flush(rows)[1]["acc"][0]


g = torch.Generator().manual_seed(0)


def test_multiclass_accuracy_matches_argmax():
    out = torch.randn(50, 7, generator=g)
    y = torch.randint(0, 7, (50,), generator=g)
    expected = (out.argmax(1) == y).float().mean().item()
    assert acc_of(L.ARGMAX, out, y) == pytest.approx(expected)


def test_multiclass_accuracy_with_probability_targets():
    out = torch.randn(40, 5, generator=g)
    y = torch.softmax(torch.randn(40, 5, generator=g), 1)
    expected = (out.argmax(1) == y.argmax(1)).float().mean().item()
    assert acc_of(L.ARGMAX, out, y) == pytest.approx(expected)


def test_sequence_accuracy_leaves_ignored_targets_out():
    out = torch.randn(4, 9, 6, generator=g)  # N, C, T
    y = torch.randint(0, 9, (4, 6), generator=g)
    y[:, 4:] = -100  # padding
    valid = y != -100
    expected = ((out.argmax(1) == y) & valid).sum().item() / valid.sum().item()
    assert acc_of(L.ARGMAX, out, y, ignore=-100) == pytest.approx(expected)


def test_binary_probabilities_and_logits():
    p = torch.rand(64, 1, generator=g)
    y = (torch.rand(64, 1, generator=g) > 0.5).float()
    assert acc_of(L.PROB, p, y) == pytest.approx(((p > 0.5) == (y > 0.5)).float().mean().item())
    z = torch.randn(64, generator=g)
    y1 = (torch.rand(64, generator=g) > 0.5).float()
    assert acc_of(L.LOGIT, z, y1) == pytest.approx(((z > 0) == (y1 > 0.5)).float().mean().item())


def test_multilabel_accuracy_is_per_label():
    z = torch.randn(32, 5, generator=g)
    y = (torch.rand(32, 5, generator=g) > 0.7).float()
    assert acc_of(L.LOGIT, z, y) == pytest.approx(((z > 0) == (y > 0.5)).float().mean().item())


@pytest.mark.parametrize("rule, make, ignore", [
    (L.ARGMAX, lambda n: (torch.randn(n, 7, generator=g), torch.randint(0, 7, (n,), generator=g)), None),
    (L.ARGMAX, lambda n: (torch.randn(n, 5, generator=g), torch.softmax(torch.randn(n, 5, generator=g), 1)), None),
    (L.ARGMAX, lambda n: (torch.randn(n, 9, 6, generator=g), torch.randint(-1, 9, (n, 6), generator=g)), -1),
    (L.ARGMAX, lambda n: (torch.randn(n, 4, generator=g), torch.randint(0, 4, (n, 1), generator=g)), None),
    (L.PROB, lambda n: (torch.rand(n, 1, generator=g), (torch.rand(n, 1, generator=g) > 0.5).float()), None),
    (L.LOGIT, lambda n: (torch.randn(n, generator=g), (torch.rand(n, generator=g) > 0.5).float()), None),
    (L.LOGIT, lambda n: (torch.randn(n, 5, generator=g), (torch.rand(n, 5, generator=g) > 0.7).float()), None),
])
def test_accuracy_batched_over_steps_is_each_steps_own(rule, make, ignore):
    # What the flush computes for many steps at once (deferred parts) against each step computed alone.
    pairs = [make(n) for n in (16, 16, 16, 3, 16)]
    batched = C.BatchedAccuracy(rule, ignore)
    da = C.AccuracyDecoder()
    deferred, eager = [], []
    for i, (out, y) in enumerate(pairs):
        r = Row(i)
        r.defer(da, batched, (out, y), 0)
        deferred.append(r)
        eager.append(acc_of(rule, out, y, ignore))
    assert flush(deferred)[1]["acc"] == pytest.approx(eager)


def test_a_deferred_part_whose_inputs_changed_in_place_is_dropped_not_misread():
    out, y = torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    kept = [Row(0), Row(1)]
    batched, da = C.BatchedAccuracy(L.ARGMAX, None), C.AccuracyDecoder()
    kept[0].defer(da, batched, (out, y), 100)
    kept[1].defer(da, batched, (out.clone(), y.clone()), 100)
    y.add_(1)  # a buffer refilled before the flush
    led = Ledger(lambda *a: got.append(a))
    got = []
    for r in kept:
        led.append(r)
    assert led.held == 200
    led.drain()
    assert got[0][1]["acc"][0] is None and got[0][1]["acc"][1] is not None
    assert led.stale == 1 and led.held == 0


def test_shapes_that_cannot_be_classes_give_none():
    assert C.classes(L.ARGMAX, torch.randn(8, 3), torch.rand(8, 4)) is None
    assert C.classes(L.PROB, torch.rand(8, 2), torch.rand(8)) is None
    assert C.classes(L.REGRESS, torch.randn(8), torch.randn(8)) is None


def test_class_histograms_and_batch_balance():
    out = torch.zeros(10, 4)
    out[:, 2] = 1.0  # predicts class 2 always
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 3, -100])  # one ignored target
    pred, true = C.classes(L.ARGMAX, out, y)
    part, meta = C.hist_part(L.ARGMAX, pred, true, 4, multilabel=False)
    row = Row(0)
    row.add(C.HistDecoder(4, "classes"), part, meta)
    _, cols, hists = flush([row])
    assert hists["target"] == [6, 2, 0, 1]
    assert hists["pred"] == [0, 0, 9, 0]
    assert cols["batch_classes"] == [3]
    assert cols["batch_top_class"] == [0]
    assert cols["batch_top_frac"][0] == pytest.approx(6 / 9)
    assert cols["pred_top_frac"][0] == pytest.approx(1.0)


def test_binary_histogram():
    p = torch.tensor([0.9, 0.8, 0.2, 0.7])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0])
    pred, true = C.classes(L.PROB, p, y)
    part, meta = C.hist_part(L.PROB, pred, true, 2, multilabel=False)
    row = Row(0)
    row.add(C.HistDecoder(2, "binary"), part, meta)
    _, cols, hists = flush([row])
    assert hists == {"target": [3, 1], "pred": [1, 3]}
    assert cols["pred_top_frac"] == [0.75]


@pytest.mark.parametrize(
    "kind,make,reference",
    [
        (A.ZERO, lambda x: torch.relu(x), lambda y: (y == 0).float().mean()),
        (A.SAT01, lambda x: torch.sigmoid(4 * x), lambda y: ((y < 0.01) | (y > 0.99)).float().mean()),
        (A.TANH, lambda x: torch.tanh(3 * x), lambda y: (y.abs() > 0.99).float().mean()),
        (A.LOGSAT, lambda x: torch.log_softmax(5 * x, 1), lambda y: ((y.exp() < 0.01) | (y.exp() > 0.99)).float().mean()),
    ],
)
def test_activation_statistics(kind, make, reference):
    y = make(torch.randn(128, 33, generator=g))
    part, counted = A.act_part(kind, y)
    row = Row(0)
    row.add(A.ActDecoder("layer", kind), part, counted)
    _, cols, _ = flush([row])
    name = "act_zero/layer" if kind == A.ZERO else "act_sat/layer"
    assert cols[name][0] == pytest.approx(reference(y).item(), abs=1e-6)
    assert cols["act_mean/layer"][0] == pytest.approx(y.mean().item(), abs=1e-5)
    assert cols["act_std/layer"][0] == pytest.approx(y.std(unbiased=False).item(), rel=1e-3)


def test_large_activation_is_sampled_and_shared_module_calls_are_summed():
    y = torch.relu(torch.randn(64, 32, 40, 40, generator=g))  # 3.3 M elements: sampled
    part, counted = A.act_part(A.ZERO, y)
    assert counted <= A.MAX_SAMPLE
    small = torch.relu(torch.randn(100, generator=g))
    part2, counted2 = A.act_part(A.ZERO, small)
    dec = A.ActDecoder("shared", A.ZERO)
    row = Row(0)
    row.add(dec, part, counted)
    row.add(dec, part2, counted2)  # the same module called twice in one step
    _, cols, _ = flush([row])
    expected = ((y.reshape(-1)[:: (y.numel() // A.MAX_SAMPLE) | 1] == 0).sum() + (small == 0).sum()) / (counted + counted2)
    assert cols["act_zero/shared"][0] == pytest.approx(expected.item(), abs=1e-6)
    assert cols["act_zero/shared"][0] == pytest.approx(0.5, abs=0.01)


def test_input_statistics_match_numpy():
    x = torch.randn(32, 3, 4, 4, generator=g) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1)
    x[:, 0, 0, 0] = 5.0  # one constant feature
    part, features = I.input_part(x)
    row = Row(0)
    row.add(I.InputDecoder(), part, features)
    _, cols, _ = flush([row])
    a = x.reshape(32, -1).double().numpy()
    assert cols["input_mean"][0] == pytest.approx(a.mean(), rel=1e-4, abs=1e-4)
    assert cols["input_std"][0] == pytest.approx(a.std(ddof=1), rel=1e-4)
    assert cols["input_min"][0] == pytest.approx(a.min(), rel=1e-6)
    assert cols["input_max"][0] == pytest.approx(a.max(), rel=1e-6)
    fstd = a.std(0, ddof=1)
    assert cols["input_feat_std_min"][0] == pytest.approx(fstd.min(), abs=1e-4)
    assert cols["input_feat_std_max"][0] == pytest.approx(fstd.max(), rel=1e-4)
    assert cols["input_const_frac"][0] == pytest.approx(1 / 48)
    am = np.abs(a).mean(0)
    assert cols["input_feat_absmax_ratio"][0] == pytest.approx(am.max() / am[am > 0].min(), rel=1e-4)


def test_integer_inputs_have_no_feature_statistics():
    assert I.input_part(torch.randint(0, 100, (4, 16))) is None


def test_layer_norms_fold_parameters_into_layers():
    w1, b1, w2 = torch.randn(4, 3, generator=g), torch.randn(4, generator=g), torch.randn(2, 4, generator=g)
    layout = Ly.ParamLayout(["fc1", "fc1", "fc2"])
    row = Row(0)
    row.add(Ly.NormDecoder(layout, "gsq"), Ly.norms([w1, b1, w2]))
    _, cols, _ = flush([row])
    fc1 = math.sqrt(w1.pow(2).sum().item() + b1.pow(2).sum().item())
    assert cols["grad_norm/fc1"][0] == pytest.approx(fc1, rel=1e-5)
    assert cols["grad_norm/fc2"][0] == pytest.approx(w2.norm().item(), rel=1e-5)
    assert cols["grad_norm"][0] == pytest.approx(math.sqrt(fc1**2 + w2.norm().item() ** 2), rel=1e-5)


def test_update_ratio_and_nonfinite_counts():
    w = torch.randn(10, generator=g)
    dw = 0.01 * torch.randn(10, generator=g)
    layout = Ly.ParamLayout(["fc"])
    grads = [torch.tensor([1.0, float("nan"), float("inf"), 2.0])]
    row = Row(0)
    row.add(Ly.NormDecoder(layout, "wsq"), Ly.norms([w]))
    row.add(Ly.NormDecoder(layout, "usq"), Ly.norms([dw]))
    row.add(Ly.NonfiniteDecoder([4]), Ly.nonfinite_counts(grads))
    _, cols, _ = flush([row])
    assert cols["update_ratio/fc"][0] == pytest.approx((dw.norm() / w.norm()).item(), rel=1e-5)
    assert cols["update_ratio"][0] == pytest.approx((dw.norm() / w.norm()).item(), rel=1e-5)
    assert cols["weight_norm/fc"][0] == pytest.approx(w.norm().item(), rel=1e-6)
    assert cols["nonfinite_grads"] == [2]


def test_ledger_rows_with_different_layouts_leave_gaps_as_none():
    dl = C.LossDecoder()
    layout = Ly.ParamLayout(["fc"])
    rows = []
    for step in range(6):
        r = Row(step, time=float(step), scalars={"lr": 0.1 * step})
        r.add(dl, torch.tensor(float(step)), 8)
        if step % 3 == 0:  # a sampled step
            r.add(Ly.NormDecoder(layout, "gsq"), Ly.norms([torch.full((4,), float(step))]))
        rows.append(r)
    steps, cols, _ = flush(rows)
    assert steps == list(range(6))
    assert cols["loss"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert cols["lr"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert cols["grad_norm/fc"] == [0.0, None, None, 6.0, None, None]


def test_ledger_keeps_nan_losses():
    r = Row(0)
    r.add(C.LossDecoder(), torch.tensor(float("nan")), 4)
    _, cols, _ = flush([r])
    assert math.isnan(cols["loss"][0])


def test_micro_batches_average_into_one_step():
    r = Row(0)
    dl, da = C.LossDecoder(), C.AccuracyDecoder()
    r.add(dl, torch.tensor(1.0), 10)
    r.add(dl, torch.tensor(3.0), 30)
    r.add(da, torch.tensor(5), 10)
    r.add(da, torch.tensor(15), 30)
    _, cols, _ = flush([r])
    assert cols["loss"] == [pytest.approx(2.5)]
    assert cols["acc"] == [pytest.approx(0.5)]


def test_decode_is_pure_numpy_on_host_arrays():
    # decode_rows works on what the transfer brought back; it never touches a device tensor's values.
    r = Row(3, time=1.0)
    r.add(C.LossDecoder(), torch.tensor(0.25), 2)
    chunk = (-1, torch.float32, True)
    lay = [[(p[0], chunk, 1, p[2], 0) for p in r.parts]]
    steps, cols, hists, times = decode_rows([r], lay, {chunk: (-1, 0)}, {-1: np.array([0.25])})
    assert steps == [3] and cols["loss"] == [0.25] and times == [1.0] and hists is None


def test_cadence_is_a_schedule_of_the_step_number_whatever_the_steps_cost():
    # Issue 15: a busy machine (slow steps, costly tiers) samples the very steps an idle one does.
    def sampled(step_time, tier_cost, steps=20000):
        c = Cadence()
        out = []
        for step in range(steps):
            grads, deep = c.plan(step)
            assert grads == deep  # one schedule for both tiers: every deep step is a grads step
            if deep:
                out.append(step)
            c.observe(step_time, 50e-6, {"grads": tier_cost if grads else 0.0, "deep": tier_cost if deep else 0.0},
                      (grads, deep))
        return out

    idle = sampled(0.002, 1e-4)
    assert sampled(0.200, 5e-2) == idle
    assert idle[:WARMUP_STEPS] == list(range(WARMUP_STEPS))
    for step in idle[WARMUP_STEPS:]:
        assert step % interval_at(step) == 0
    assert [s for s in idle if 8 <= s <= 24] == [8, 12, 16, 20, 24]
    assert [s for s in idle if 512 <= s <= 560] == [512, 528, 544, 560]
    assert {1 << n for n in range(15)} <= set(idle)  # every power of two
    assert interval_at(10 ** 9) == MAX_EVERY
    # A probe that continues from an earlier one (a new process, continue_from) plans from wherever it starts.
    c = Cadence()
    assert c.plan(600) == (False, False) and c.plan(608) == (True, True) and c.plan(9) == (False, False)


def test_cadence_fixed_interval_and_argument_checks():
    c = Cadence(every=5)
    assert [c.plan(s)[1] for s in range(11)] == [s % 5 == 0 for s in range(11)]
    with pytest.raises(ValueError, match="fraction"):
        Cadence(budget=2)
    with pytest.raises(ValueError, match="positive"):
        Cadence(every=0)
