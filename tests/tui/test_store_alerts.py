"""One alert type (issue 17 item 4): `Alert` and `clean_alert` in probe/rules/base.py, the one normaliser that
`check` and the viewer's alert book read alerts through."""

from __future__ import annotations

import io
import json
import math

from accmon.probe import wire
from accmon.probe.recording import RecordingWriter
from accmon.probe.rules.base import SEVERITIES, clean_alert
from accmon.tui.check import check, summarize
from accmon.tui.store import AlertBook, RunStore

HOSTILE = [
    {"id": "integration_a", "severity": "warning", "step": 3, "message": "m", "fix": "f", "evidence": {"x": math.nan}},
    {"id": "integration_b", "severity": "bogus", "step": 5.0, "message": 7, "fix": None, "state": "weird", "cause": 12},
    {"id": "integration_c", "severity": ["x"], "step": True, "rank": "r", "cause": None, "extra": {"z": math.inf}},
    {"id": "integration_d", "step": 2.5, "evidence": [1, 2], "last_step": 9, "cleared_step": 10, "state": "cleared"},
    {"id": "integration_e", "step": math.nan, "severity": "critical", "rank": 1},
]


def test_clean_alert_gives_every_field_its_type_and_keeps_the_rest():
    a = clean_alert(HOSTILE[1], 3)
    assert a == {"id": "integration_b", "severity": "info", "step": 5, "message": "7", "fix": "None", "evidence": {},
                 "state": "active", "cause": "12", "rank": 3}
    c = clean_alert(HOSTILE[2], 3)
    assert c is not None and (c["severity"], c["step"], c["rank"], c["cause"]) == ("info", -1, 3, None)
    assert c["extra"] == {"z": math.inf}  # other keys as they are: JSON-safe only when written
    assert [clean_alert(h)["step"] for h in HOSTILE[3:]] == [-1, -1]  # type: ignore[index]
    assert clean_alert({"id": 5}) is None and clean_alert("nan_loss") is None and clean_alert(None) is None
    assert {clean_alert({"id": "x", "severity": s})["severity"] for s in SEVERITIES} == set(SEVERITIES)  # type: ignore[index]


def test_check_and_the_store_hold_the_same_alert():
    frames = [wire.envelope("alert", "r", 0, i + 1, i, alert=a) for i, a in enumerate(HOSTILE)]
    _, by_check = summarize(iter(frames), rerun_rules=False)
    store = RunStore()
    store.ingest(frames)
    by_store = sorted(store.alerts.by_key.values(), key=lambda a: (a["step"], a["id"]))
    assert by_check == by_store
    # Before, the two differed: check took step 5.0 for -1 (now 5, as the store did), the store step True for 1
    # (now -1, as check did) and kept a message of 7, a state "weird" and a rank "r" as they were.
    b = next(a for a in by_store if a["id"] == "integration_b")
    assert (b["step"], b["message"], b["state"]) == (5, "7", "active")
    assert next(a for a in by_store if a["id"] == "integration_c")["step"] == -1


def test_the_book_keys_an_alert_by_its_frames_rank_when_it_names_none():
    book = AlertBook()
    assert book.update({"id": "straggler_rank", "severity": "warning", "step": 4}, 2)
    assert book.update({"id": "straggler_rank", "severity": "warning", "step": 4, "rank": 5}, 2)
    assert not book.update({"severity": "warning"}, 2) and not book.update(["x"], 2)
    assert sorted(k[1] for k in book.by_key) == [2, 5]


def test_check_json_writes_nan_evidence_as_words(tmp_path):
    rec = tmp_path / "r.accmon"
    w = RecordingWriter(str(rec))
    w.write([wire.encode(f) for f in [
        wire.envelope("meta", "r", 0, 1, -1, name="r"),
        wire.envelope("alert", "r", 0, 2, 0, alert=HOSTILE[0]),
        wire.envelope("end", "r", 0, 3, 0, status="finished", error=None, total_steps=0)]])
    w.close()
    out = io.StringIO()
    assert check(str(rec), as_json=True, out=out, err=io.StringIO()) == 1
    (alert,) = json.loads(out.getvalue())["alerts"]
    assert alert["evidence"] == {"x": "NaN"} and alert["severity"] == "warning"
