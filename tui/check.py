"""`accmon check FILE [--json]`: the diagnosis of a recording, headless, for CI.

Today's rules run again over the recorded frames, so a recording made with older rules gets today's
diagnosis. Exit 0 clean, 1 when a warning or worse fired, 2 when the input cannot be read, 3 when the record is
incomplete: steps were lost (dropped by the probe, or the recording was cut short), the file is damaged, or the
run crashed, and no warning fired (1 keeps its meaning; `run.complete` in --json says it either way).

`--baseline GOOD [--tolerance T]` compares the run with a recording of one that worked (tui/baseline/): exit 4
when it is worse beyond tolerance, whatever else the report says (4 wins over 1 and 3: the gate's question is
"worse than the run that worked?"; the alerts and `run.complete` still say the rest). The baseline unreadable,
or holding no step: exit 2. `--json` adds a `baseline` object: `verdict` ("ok" or "worse"), `tolerance`, and
per criterion `new`, `baseline`, `difference`, `tolerance` and `pass`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

from accmon.probe import registry
from accmon.probe.recording import RecordingError, RecordingReader
from accmon.probe.rules import ALERT_IDS, MAX_RANKS, SEVERITY_RANK, StreamDiagnosis, severity_rank
from accmon.probe.rules.base import Alert, clean_alert

from .baseline import BaselineError, Comparison, Tolerance, compare_runs, from_store, tee
from .importers import LogError, load_log
from .store import RankData, RunStore, run_outcome, stop_words
from .system_summary import SystemSummary, one_line
from .text import RULE_ERROR_ID, format_alert, json_safe, printable

EXIT_CLEAN, EXIT_WARNING, EXIT_UNREADABLE, EXIT_INCOMPLETE = 0, 1, 2, 3
EXIT_WORSE = 4  # --baseline: worse than the run that worked, beyond tolerance


@dataclass
class RunSummary:
    """What a recording says about its run (the `run` object of `check --json`)."""

    id: str | None = None
    name: str | None = None
    status: str = "truncated"
    steps: int = 0
    last_step: int = -1
    ranks: list[int] = field(default_factory=list)
    host: str | None = None
    started: float | None = None
    error: str | None = None
    exit_code: int | None = None
    rank_status: dict[int, str] = field(default_factory=dict)
    epochs: int = 0  # epochs seen (1 + the largest `epoch` value recorded)
    rule_errors: list[str] = field(default_factory=list)
    # Rules today's diagnosis lost to an exception: {rule, error, step, rank, ids} (`disabled_rules` in --json).
    disabled_rules: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    # Steps the run logged (its end frames' total, over ranks; None without an end frame for every rank), the
    # steps recorded here (summed over ranks, unlike `steps`), and how many were lost between the two.
    steps_logged: int | None = None
    steps_recorded: int = 0
    steps_lost: int | None = None
    steps_dropped: int = 0  # of the lost ones, those the probe's bounded inbox dropped (its end frames say)
    complete: bool = False  # an end frame for every rank, no step lost, no damage: the record is the whole run
    # Who stopped a run that did not crash: {"by": "user", "reason": "KeyboardInterrupt", "step": N} for a Ctrl-C
    # (the first end frame that says so); None when nobody did. Not a status: `status` keeps its four values.
    stopped: dict[str, Any] | None = None
    # The lowest rank's step split, throughput and memory peaks (tui/system_summary.py); None without figures.
    system: dict[str, Any] | None = None


def summarize(frames: Iterable[dict[str, Any]], *, rerun_rules: bool = True) -> tuple[RunSummary, list[Alert]]:
    """Run summary and alerts from a stream of frames (a recording, or what a viewer received)."""
    summary = RunSummary()
    steps_per_rank: dict[int, int] = {}
    last_per_rank: dict[int, int] = {}
    last_time: dict[int, float] = {}
    last_heard: dict[int, float] = {}
    ends: list[dict[str, Any]] = []
    exits: list[dict[str, Any]] = []
    recorded_alerts: dict[tuple, Alert] = {}
    diagnosis = StreamDiagnosis(per_rank=rerun_rules)
    machine: dict[int, SystemSummary] = {}
    devices: dict[int, Any] = {}
    for frame in frames:
        summary.frames += 1
        kind, rank = frame["kind"], frame["rank"]
        if not diagnosis.follows(rank):
            continue
        if isinstance(frame.get("t"), (int, float)) and kind != "exit":
            last_time[rank] = frame["t"]
        summary.id = summary.id or frame["run"]
        if kind == "meta":
            summary.name = summary.name or frame.get("name")
            summary.host = summary.host or frame.get("host")
            summary.started = summary.started or frame.get("started")
        elif kind == "steps":
            steps = frame["steps"]
            last = last_per_rank.get(rank, -1)
            # Steps new to the rank: a step whose values came in two frames counts once, as the probe counts it.
            new = sum(1 for st in steps if st > last)
            steps_per_rank[rank] = steps_per_rank.get(rank, 0) + new
            if steps:
                last_per_rank[rank] = max(last, max(steps))
            cols = frame.get("cols")
            epoch_col = cols.get("epoch", ()) if isinstance(cols, dict) else ()
            # Finite only: a logged epoch=inf (or 1e300 from a CSV) is no epoch count.
            epochs = [e for e in epoch_col if isinstance(e, (int, float)) and math.isfinite(e) and abs(e) < 2**53]
            if epochs:
                summary.epochs = max(summary.epochs, int(max(epochs)) + 1)
            if isinstance(cols, dict):
                machine.setdefault(rank, SystemSummary()).add(cols)
        elif kind == "facts":
            facts = frame.get("facts")
            if isinstance(facts, dict) and "devices" in facts:
                devices[rank] = facts["devices"]
        elif kind == "end":
            ends.append(frame)
        elif kind == "exit":
            exits.append(frame)
            heard = frame.get("last_heard")
            if isinstance(heard, (int, float)) and not isinstance(heard, bool):
                # When the viewer last heard the rank (heartbeats and its connection closing included): it tells
                # which rank fell silent first better than the rank's last recorded frame, its last flush.
                last_heard[rank] = float(heard)
        elif kind == "alert":
            a = clean_alert(frame.get("alert"), rank)
            if a is not None:
                recorded_alerts[(a["id"], a.get("cause"), rank)] = a
            continue
        steps_per_rank.setdefault(rank, 0)
        try:
            diagnosis.observe(frame)
        except Exception as exc:  # a frame the rules cannot read costs its diagnosis, never the report
            summary.rule_errors.append(f"frame seq {frame['seq']} of rank {rank}: {exc.__class__.__name__}: {exc}")
    if diagnosis.ranks_left_out:
        summary.problems.append({"offset": -1, "kind": "too_many_ranks",
                                 "message": f"{diagnosis.ranks_left_out} ranks beyond the first {MAX_RANKS} left out of the report"})
    summary.ranks = sorted(steps_per_rank)
    if machine:
        first = min(machine)
        summary.system = machine[first].result({"devices": devices.get(first)})
    summary.steps = max(steps_per_rank.values(), default=0)
    _count_losses(summary, ends, steps_per_rank)
    summary.last_step = max(last_per_rank.values(), default=-1)
    lost = bool(summary.steps_lost) or bool(summary.steps_dropped)
    outcome = run_outcome(summary.ranks, ends, exits, lost=lost, running=lambda: _registered(summary.id),
                          last_heard={**last_time, **last_heard}, last_step=last_per_rank)
    summary.status, summary.error, summary.exit_code = outcome.status, outcome.error, outcome.exit_code
    summary.stopped, summary.rank_status = outcome.stopped, outcome.ranks
    found: list[Any] = diagnosis.alerts()
    if rerun_rules:
        # Today's rules replace what older rules recorded; alerts no rule makes (a framework integration's own)
        # are kept as recorded.
        known = frozenset(ALERT_IDS)
        # A rule the probe lost while recording says nothing about today's rules: those say it themselves.
        found += [a for a in recorded_alerts.values() if a["id"] not in known and a["id"] != RULE_ERROR_ID]
        summary.disabled_rules = diagnosis.disabled_rules()
    else:
        found += list(recorded_alerts.values())
    alerts = [a for a in (clean_alert(a, a.get("rank", 0)) for a in found) if a is not None]
    alerts.sort(key=lambda a: (a["step"], a["id"]))
    return summary, alerts


def _count_losses(summary: RunSummary, ends: list[dict[str, Any]], recorded: dict[int, int]) -> None:
    """Steps logged against steps recorded, rank by rank, from the end frames' counts."""
    summary.steps_recorded = sum(recorded.values())
    logged: dict[int, int] = {}
    dropped = 0
    for e in ends:
        total, drop = e.get("total_steps"), e.get("dropped_steps")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            logged[e["rank"]] = max(logged.get(e["rank"], 0), total)
        if isinstance(drop, int) and not isinstance(drop, bool) and drop > 0:
            dropped += drop
    summary.steps_dropped = dropped
    if logged and all(r in logged for r in recorded):
        summary.steps_logged = sum(logged.values())
        summary.steps_lost = sum(max(0, n - recorded.get(r, 0)) for r, n in logged.items())
    elif dropped:
        summary.steps_lost = dropped


def _registered(run_id: str | None) -> bool:
    """Whether the live registry lists the run: a recording of a run still going is not cut short."""
    return run_id is not None and any(e.run_id == run_id for e in registry.list_runs())


def check(path: str, *, as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
          baseline: str | None = None, tolerance: Iterable[str] = ()) -> int:
    try:
        tol = Tolerance.parse(tolerance)
    except ValueError as exc:
        err.write(f"accmon check: {exc}\n")
        return EXIT_UNREADABLE
    store = RunStore() if baseline else None
    try:
        summary, alerts = _diagnose_file(path, store)
    except Exception as exc:  # whatever a hostile file finds: unreadable, said in one line, never a traceback
        err.write(f"accmon check: {_unreadable(path, exc)}\n")
        return EXIT_UNREADABLE
    if summary.frames == 0 and summary.problems:
        p = summary.problems[0]
        err.write(f"accmon check: {path}: no readable frame (byte {p['offset']}: {p['message']})\n")
        return EXIT_UNREADABLE
    if summary.problems and summary.status == "running":
        summary.status = "truncated"
    lost = bool(summary.steps_lost) or bool(summary.steps_dropped)  # then the run is never finished (run_outcome)
    summary.complete = summary.status in ("finished", "crashed") and not lost and not summary.problems
    worst = max((severity_rank(a.get("severity")) for a in alerts), default=0)
    comparison = None
    if baseline and store is not None:
        comparison = _compare(path, store, alerts, baseline, tol, err)
        if comparison is None:
            return EXIT_UNREADABLE
    if as_json:
        run = {k: v for k, v in vars(summary).items() if k != "disabled_rules"}
        report = {"run": run, "alerts": [_alert_json(a) for a in alerts], "disabled_rules": summary.disabled_rules}
        if comparison is not None:
            report["baseline"] = comparison.as_json()
        out.write(json.dumps(json_safe(report), indent=2) + "\n")
    else:
        _print_human(path, summary, alerts, out)
        if comparison is not None:
            _Printable(out).write("".join(line + "\n" for line in comparison.lines()))
    if comparison is not None and comparison.worse:
        return EXIT_WORSE
    if worst >= SEVERITY_RANK["warning"]:
        return EXIT_WARNING
    if summary.status in ("truncated", "crashed") or lost or summary.problems:
        return EXIT_INCOMPLETE
    return EXIT_CLEAN


def _unreadable(path: str, exc: Exception) -> str:
    """Why `path` could not be read, in one line: the reader's own words, the OS's, or the exception's."""
    if isinstance(exc, (RecordingError, LogError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{path}: {exc.strerror or exc}"
    return f"{path}: cannot be read ({exc.__class__.__name__}: {str(exc)[:300]})"


def _compare(path: str, store: RunStore, alerts: list[Alert], baseline: str, tol: Tolerance,
             err: TextIO) -> Comparison | None:
    """The run (its store, filled while it was diagnosed) against the baseline file, diagnosed by today's rules
    as well; None, said in one line, when the baseline cannot be used."""
    base_store = RunStore()
    try:
        base_summary, base_alerts = _diagnose_file(baseline, base_store)
        base = from_store(baseline, base_store, [f"byte {p['offset']}: {p['message']}" for p in base_summary.problems
                                                 if p["offset"] >= 0])
    except BaselineError as exc:
        err.write(f"accmon check: {exc}\n")
        return None
    except Exception as exc:  # a hostile baseline: one line, never a traceback
        err.write(f"accmon check: baseline {_unreadable(baseline, exc)}\n")
        return None
    with_steps = [r for r, d in store.ranks.items() if d.axis.n]
    # A run that recorded no step (it crashed at start) reached nothing: worse than any baseline that did.
    new = store.ranks[min(with_steps)] if with_steps else RankData(0)
    # compare_runs reads alerts as plain dicts (an Alert is one; its annotation can say Mapping[str, Any]).
    return compare_runs(new, cast("list[dict[str, Any]]", alerts), base, cast("list[dict[str, Any]]", base_alerts), tol)


def _diagnose_file(path: str, store: RunStore | None = None) -> tuple[RunSummary, list[Alert]]:
    """An accmon recording, or a log another tool wrote (TensorBoard events, Keras/Lightning CSVLogger). With a
    store, the frames are ingested into it too (--baseline compares stores)."""
    keep: Callable[[Iterable[dict[str, Any]]], Iterable[dict[str, Any]]] = (
        (lambda frames: frames) if store is None else (lambda frames: tee(frames, store)))
    try:
        reader = RecordingReader(path)
    except RecordingError as not_a_recording:
        log = load_log(path)
        if log is None:
            raise not_a_recording from None
        _, frames = log
        return summarize(keep(frames))
    summary, alerts = summarize(keep(reader.frames()))
    summary.problems = [{"offset": p.offset, "kind": p.kind, "message": p.message} for p in reader.problems] + [
        p for p in summary.problems if p["kind"] == "too_many_ranks"]
    return summary, alerts


class _Printable:
    """A stream that writes each line with its control characters escaped (the newline ending it kept)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write("\n".join(printable(line) for line in text.split("\n")))


def _alert_json(a: Alert) -> dict[str, Any]:
    keys = ("id", "severity", "step", "message", "evidence", "fix")
    extra = {k: v for k, v in a.items() if k not in keys}
    return {**{k: a.get(k) for k in keys}, **extra}


# C0 and C1 control characters (ESC, BEL, CSI...) and DEL: text from a recording or a live run must never reach
# a terminal as commands (issue 16: `ESC]0;…BEL` retitled it, `ESC[2J` cleared it).
def _print_human(path: str, s: RunSummary, alerts: list[Alert], out: TextIO) -> None:
    out = _Printable(out)  # type: ignore[assignment]  # only write() is used
    ranks = f", ranks {','.join(map(str, s.ranks))}" if len(s.ranks) > 1 else ""
    out.write(f"{path}: run {s.name or '?'} ({s.id}) {s.status}, {s.steps} steps (last step {s.last_step}){ranks}\n")
    if s.error:
        out.write(f"  error: {s.error}\n")
    if s.stopped:
        out.write(f"  {stop_words(s.stopped)}\n")
    if s.steps_lost:
        logged = f"{s.steps_logged} steps logged, " if s.steps_logged is not None else ""
        why = f" ({s.steps_dropped} dropped by the probe's bounded queue)" if s.steps_dropped else ""
        out.write(f"  incomplete: {logged}{s.steps_recorded} recorded, {s.steps_lost} lost{why}\n")
    elif s.status == "truncated":
        out.write(f"  incomplete: no end frame ({s.steps_recorded} steps recorded; how many were logged is unknown)\n")
    if s.system is not None and one_line(s.system):
        out.write(f"  machine: {one_line(s.system)}\n")
    for p in s.problems:
        where = f" at byte {p['offset']}" if p["offset"] >= 0 else ""
        out.write(f"  {p['kind']}{where}: {p['message']}\n")
    for e in s.rule_errors[:5]:
        out.write(f"  rules skipped {e}\n")
    for r in s.disabled_rules:
        rank = f" of rank {r['rank']}" if len(s.ranks) > 1 else ""
        ids = f"; not checked after it: {', '.join(r['ids'])}" if r["ids"] else ""
        out.write(f"  rule {r['rule']}{rank} disabled at step {r['step']} by an error: {r['error']}{ids}\n")
    if not alerts:
        out.write("  no alerts\n")
    for a in alerts:
        out.write("  " + format_alert(a) + "\n")
