"""A rule that raises is disabled by the Diagnoser and the run goes on; that must be seen, not pass for a quiet run.

The failing rule here is a real rule with a real bug (it divides by the recent accuracy), run on a real frame
stream: an API training loop under `accmon run --headless --record`, then `accmon check` over the recording.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap

import pytest

from accmon.probe.recording import RecordingReader
from tests.conftest import run_accmon, write_script

# The plug-in rule, with its bug: it assumes accuracy is never 0.
FRAGILE = textwrap.dedent(
    """
    from accmon.probe.rules import Rule, Finding

    class LossPerAccuracy(Rule):
        ids = ("loss_per_accuracy",)

        def check(self, st, h):
            r = st.recent("acc", h.now)
            if r is not None and 1.0 / float(r[0]) > 1e6:  # ZeroDivisionError once accuracy is 0
                yield Finding("loss_per_accuracy", True, message="huge", fix="none")
    """
)

# Accuracy drops to exactly 0 for steps 100-119: the rule breaks there, at an evaluation point near step 104.
TRAIN = FRAGILE + textwrap.dedent(
    """
    import time
    import accmon.probe as accmon
    import accmon.probe.rules.catalogue as catalogue
    catalogue.RULES = catalogue.RULES + (LossPerAccuracy,)  # the probe's Diagnoser runs every rule in RULES

    for step in range(300):
        accmon.log(step, loss=1.0 / (step + 1), acc=0.0 if 100 <= step < 120 else 0.6)
        time.sleep(0.005)  # a training loop takes time: the viewer attaches while it runs
    """
)


def record(tmp_path) -> tuple[str, str]:
    rec = str(tmp_path / "r.accmon")
    out = run_accmon("run", "--headless", "--record", rec, "--", sys.executable, write_script(tmp_path, "train.py", TRAIN))
    assert out.returncode == 0, out.stderr
    return rec, out.stderr


def test_headless_says_once_which_rule_was_disabled_and_why(tmp_path):
    rec, stderr = record(tmp_path)
    lines = [ln for ln in stderr.splitlines() if "rule LossPerAccuracy disabled" in ln]
    assert len(lines) == 1, stderr
    (line,) = lines
    assert "ZeroDivisionError" in line and "loss_per_accuracy" in line
    step = int(line.split("disabled at step ")[1].split()[0])
    assert 100 <= step < 120
    # The notice went over the wire into the recording once, as an alert frame.
    notices = [f["alert"] for f in RecordingReader(rec).frames() if f["kind"] == "alert" and f["alert"]["id"] == "rule_error"]
    assert [n["cause"] for n in notices] == ["LossPerAccuracy"]
    # Today's rules, which do not include the broken one, run clean over the recording: nothing disabled, and the
    # probe's notice is not carried over as an alert.
    out = run_accmon("check", rec, "--json")
    report = json.loads(out.stdout)
    assert report["disabled_rules"] == []
    assert all(a["id"] != "rule_error" for a in report["alerts"])


def test_check_lists_the_disabled_rule_in_json_and_in_words(tmp_path, monkeypatch):
    rec, _ = record(tmp_path)
    ns: dict = {}
    exec(FRAGILE, ns)
    import accmon.probe.rules.catalogue as catalogue
    from accmon.tui.check import check

    monkeypatch.setattr(catalogue, "RULES", catalogue.RULES + (ns["LossPerAccuracy"],))
    buf = io.StringIO()
    code = check(rec, as_json=True, out=buf)
    report = json.loads(buf.getvalue())
    (disabled,) = report["disabled_rules"]
    assert disabled["rule"] == "LossPerAccuracy" and "ZeroDivisionError" in disabled["error"]
    assert 100 <= disabled["step"] < 120 and disabled["rank"] == 0 and disabled["ids"] == ["loss_per_accuracy"]
    assert set(report) == {"run", "alerts", "disabled_rules"} and "disabled_rules" not in report["run"]
    assert all(a["id"] != "rule_error" for a in report["alerts"])
    assert code == 0  # a disabled rule is said, not a training fault

    human = io.StringIO()
    check(rec, out=human)
    text = human.getvalue()
    assert f"rule LossPerAccuracy disabled at step {disabled['step']} by an error: ZeroDivisionError" in text, text
    assert "loss_per_accuracy" in text


@pytest.mark.parametrize("broken", [False, True])
def test_human_check_mentions_disabled_rules_only_when_there_are_some(tmp_path, monkeypatch, broken):
    rec, _ = record(tmp_path)
    import accmon.probe.rules.catalogue as catalogue
    from accmon.tui.check import check

    if broken:
        ns: dict = {}
        exec(FRAGILE, ns)
        monkeypatch.setattr(catalogue, "RULES", catalogue.RULES + (ns["LossPerAccuracy"],))
    human = io.StringIO()
    check(rec, out=human)
    assert ("disabled at step" in human.getvalue()) == broken
