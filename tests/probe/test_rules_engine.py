"""The Diagnoser's contract: the alert shape, one alert per (id, cause), throttled updates, clearing, ranks,
malformed input, a broken rule, determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from test_rules_streams import Sim, constant, feed

from accmon.probe import wire
from accmon.probe.rules import ALERT_IDS, Diagnoser, Finding, Rule
from accmon.probe.rules.diagnoser import MAX_EVALS_PER_FRAME, evaluation_points
from accmon.probe.rules.labels import LabelIssue
from accmon.probe.rules.numerics import NanLoss

KEYS = {"id", "severity", "step", "message", "evidence", "fix", "state", "last_step", "cleared_step", "rank"}
CATALOGUE = {"nan_loss", "exploding_gradients", "vanishing_gradients", "lr_too_high", "lr_too_low", "accuracy_stuck",
             "single_class_prediction", "sigmoid_saturation", "dead_relu", "unnormalized_input", "no_input_variance",
             "loss_task_mismatch", "double_softmax", "output_activation_mismatch", "label_issue", "class_imbalance",
             "unshuffled_data", "weights_not_updating", "overfitting", "val_loss_stagnating",
             # Added by issue 19: the machine beside the curves.
             "input_bound", "throughput_drop", "memory_growth", "near_oom"}


def dead_relu_sim(**kw) -> Sim:
    dead = constant(1.0)
    kw.setdefault("steps", 400)
    return Sim(**kw, overrides={"act_zero/1": dead, "act_zero/3": dead, "grad_norm/0": constant(0.0),
                                           "grad_norm/2": constant(0.0), "loss": lambda s, v: math.log(4) * (1 + 0.02 * math.sin(s)),
                                           "acc": lambda s, v: 0.25 + 0.03 * math.sin(s), "pred_top_frac": constant(1.0)})


def test_every_catalogue_id_has_a_rule():
    assert set(ALERT_IDS) == CATALOGUE


def test_an_alert_has_exactly_the_contract_keys_and_is_json_and_wire_safe():
    d, changed = feed(dead_relu_sim().frames())
    assert changed
    for alert in d.alerts() + changed:
        assert set(alert) - {"cause"} == KEYS
        assert alert["severity"] in ("info", "warning", "critical")
        assert alert["state"] in ("active", "cleared")
        assert isinstance(alert["message"], str) and "\n" not in alert["message"] and alert["message"]
        assert isinstance(alert["fix"], str) and alert["fix"]
        json.dumps(alert, allow_nan=False)  # check --json must stay valid JSON
        assert wire.decode(wire.encode(wire.envelope("alert", "r", 0, 1, 1, alert=alert)))["alert"] == alert


def test_non_finite_evidence_is_spelled_out():
    sim = Sim(steps=200, overrides={"loss": lambda s, v: math.nan if s >= 100 else v})
    d, _ = feed(sim.frames())
    (nan,) = [a for a in d.alerts() if a["id"] == "nan_loss"]
    assert nan["evidence"]["value"] == "nan" and nan["step"] == 100 and nan["cause"] == "loss"
    json.dumps(nan, allow_nan=False)


def test_one_alert_per_key_and_steady_evidence_is_not_resent():
    d, changed = feed(dead_relu_sim(steps=1500).frames())
    keys = [(a["id"], a.get("cause")) for a in d.alerts()]
    assert len(keys) == len(set(keys))
    dead = [a for a in changed if a["id"] == "dead_relu"]
    assert len(dead) == 1  # raised once; the same evidence for 1,400 more steps sends nothing
    assert dead[0]["state"] == "active" and d.alerts()[keys.index(("dead_relu", None))]["last_step"] == 1499


def test_an_update_is_sent_when_the_severity_changes():
    # Half the input features constant: advice while training goes well, a warning once it is stuck.
    half = {"mean": 0.0, "std": 1.0, "min": -3.0, "max": 3.0, "feat_absmax_ratio": 2.0, "const_frac": 0.6}
    stuck_from = 300
    sim = Sim(steps=700, inputs=half,
              overrides={"loss": lambda s, v: v if s < stuck_from else 1.386 * (1 + 0.01 * math.sin(s)),
                         "acc": lambda s, v: v if s < stuck_from else 0.25})
    _, changed = feed(sim.frames())
    versions = [a["severity"] for a in changed if a["id"] == "no_input_variance"]
    assert versions[0] == "info" and "warning" in versions


def test_cleared_when_the_condition_ends_and_raised_again_when_it_returns():
    bad = lambda s, v: math.nan if 100 <= s < 130 or s >= 400 else v  # noqa: E731
    d, changed = feed(Sim(steps=500, overrides={"loss": bad}).frames())
    nan = [a for a in changed if a["id"] == "nan_loss"]
    assert [a["state"] for a in nan] == ["active", "cleared", "active"]
    assert nan[1]["cleared_step"] > 130 and nan[0]["step"] == 100
    assert nan[2]["cleared_step"] is None and nan[2]["step"] >= 400
    (final,) = [a for a in d.alerts() if a["id"] == "nan_loss"]
    assert final["state"] == "active"


def test_alerts_are_copies_in_the_order_they_first_fired():
    d, _ = feed(Sim(steps=300, inputs={"mean": 120.0, "std": 70.0, "min": 0.0, "max": 255.0,
                                       "feat_absmax_ratio": 2.0, "const_frac": 0.0},
                    overrides={"loss": lambda s, v: math.nan if s >= 150 else v}).frames())
    ids = [a["id"] for a in d.alerts()]
    assert ids.index("unnormalized_input") < ids.index("nan_loss")
    d.alerts()[0]["message"] = "changed"
    assert d.alerts()[0]["message"] != "changed"


def test_the_rank_comes_from_the_frames():
    frames = dead_relu_sim().frames()
    for f in frames:
        f["rank"] = 3
    d, _ = feed(frames)
    assert {a["rank"] for a in d.alerts()} == {3}


def test_malformed_and_foreign_frames_are_ignored():
    d = Diagnoser()
    junk = [{"kind": "hb"}, {"kind": "alert", "alert": {"id": "x"}}, {"kind": "facts", "facts": "nope"},
            {"kind": "steps", "steps": []}, {"kind": "steps", "steps": [0, 1], "cols": {"loss": [1.0]}},
            {"kind": "steps", "steps": [2, 3], "cols": {"loss": ["a", "b"], "acc": "x"}, "hists": {"target": ["q"]}},
            {"kind": "end", "status": 3}, {}, {"kind": "facts", "facts": {"model": {"layers": "x"}, "num_classes": "4"}}]
    for frame in junk:
        assert d.observe(frame) == [] or all(a["severity"] for a in d.observe(frame))
    assert not d.errors


def test_a_rule_that_raises_is_disabled_and_the_others_go_on():
    class Broken(Rule):
        ids = ("broken",)

        def check(self, st, h):
            raise ZeroDivisionError("bug")

    d = Diagnoser(rules=[Broken(), NanLoss()])
    _, changed = feed(Sim(steps=200, overrides={"loss": lambda s, v: math.nan if s >= 50 else v}).frames(), d)
    assert "ZeroDivisionError" in d.errors["Broken"] and d.error_steps["Broken"] == 0
    assert [a["id"] for a in d.alerts()] == ["nan_loss"]
    # Said once, alert-shaped (it goes over the wire and into recordings like an alert), not in alerts().
    (notice,) = [a for a in changed if a["id"] == "rule_error"]
    assert notice["cause"] == "Broken" and notice["severity"] == "info" and notice["evidence"]["ids"] == ["broken"]
    assert "ZeroDivisionError" in notice["evidence"]["error"] and "Broken" in notice["message"]
    assert set(notice) - {"cause"} == KEYS
    assert wire.decode(wire.encode(wire.envelope("alert", "r", 0, 1, 1, alert=notice)))["alert"] == notice


def test_a_subset_of_rules():
    d, _ = feed(Sim(steps=200, loss_kind="MSELoss", targets={"shape": [64]}, predictions={"shape": [64, 1]}).frames(),
                Diagnoser(rules=[LabelIssue()]))
    assert {a["id"] for a in d.alerts()} == {"label_issue"}


def test_a_custom_rule_plugs_in():
    class Always(Rule):
        ids = ("always",)

        def check(self, st, h):
            return [Finding("always", True, None, "info", "hello", {"step": h.now}, "none")]

    d, changed = feed(Sim(steps=100).frames(), Diagnoser(rules=[Always()]))
    assert [a["id"] for a in changed] == ["always"] and d.alerts()[0]["step"] == 0


def _summary(d: Diagnoser) -> list[tuple]:
    return [(a["id"], a.get("cause"), a["severity"], a["step"], a["state"], a["cleared_step"]) for a in d.alerts()]


def test_the_same_frames_give_the_same_alerts():
    sim = dead_relu_sim(steps=500, inputs={"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0,
                                           "feat_absmax_ratio": 1.0, "const_frac": 1.0})
    a, _ = feed(sim.frames())
    b, _ = feed(sim.frames())
    assert _summary(a) == _summary(b) and _summary(a)


@pytest.mark.parametrize("frame_steps", [1, 7, 300])
def test_how_steps_are_batched_into_frames_hardly_matters(frame_steps):
    base = dead_relu_sim(steps=600)
    ref, _ = feed(base.frames())
    other, _ = feed(base.with_(frame_steps=frame_steps).frames())
    assert [x[:3] for x in _summary(ref)] == [x[:3] for x in _summary(other)]
    for x, y in zip(_summary(ref), _summary(other)):
        assert abs(x[3] - y[3]) <= 8  # the evaluation interval at these steps


def test_evaluation_points_are_bounded_per_frame():
    assert evaluation_points(-1, 40) == [0, 8, 16, 24, 32, 40]
    assert evaluation_points(250, 300) == [256, 272, 288]
    assert evaluation_points(5000, 5200) == [5056, 5120, 5184]
    assert evaluation_points(100_000, 100_600) == [100_096, 100_352]  # every 256 steps past 65,536
    many = evaluation_points(-1, 10**6)
    assert len(many) == MAX_EVALS_PER_FRAME and many[-1] == 10**6 - 10**6 % 256


def test_importing_the_rules_imports_neither_torch_nor_textual():
    code = ("import sys, accmon.probe.rules; "
            "print(any(m == 'torch' or m.startswith(('torch.', 'textual')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
