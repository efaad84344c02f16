"""Detection benchmark (issues 4, 15): every demo under `accmon run --headless --record`, then `accmon check --json`.

    .venv/bin/python bench/detect.py            # all demos
    .venv/bin/python bench/detect.py fault_nan_loss healthy_mlp
    .venv/bin/python bench/detect.py --table    # also a Markdown table (BENCHMARKS.md's Detection section)
    .venv/bin/python bench/detect.py --corpus --every 1,4,16 --table   # the corpus (bench/corpus), three cadences

`--corpus` runs bench/corpus/ (scripts that are not the demos the rules were tuned on) instead of demos/.
`--every K1,K2,...` diagnoses each run at several probe cadences. By default the script runs once with
ACCMON_EVERY=1 and each cadence K is that recording with its sampled statistics (the per-layer gradient norms,
weight norms, update ratios, activations, inputs, batch and prediction statistics: what the probe samples) kept
at the steps a probe with ACCMON_EVERY=K samples (multiples of K) and the class counts scaled by the share of
steps kept; every-step series (loss, accuracy, learning rate, validation) are what they were. K = 0 is the
probe's own schedule without ACCMON_EVERY (accmon.probe.torch.cadence: a function of the step number). `--live` runs the script again at each
cadence instead (slower; the same verdicts are expected). `--reuse DIR` diagnoses the recordings an earlier
run left in DIR again (after a rule change) instead of running the scripts. A false alarm is any warning or worse on a healthy
run, counting alerts that later cleared; a case agrees across cadences when the same alert ids (warning or
worse) fire at every cadence.

Prints, per demo, the alerts that fired (warning or worse, and the machine's timing alerts, info by design), and
in all: recall (faults whose expected alert fired at warning or worse; an expected alert that only reached info
is listed as "info only", not counted), false alarms (those alerts on healthy runs; other ids on a faulty run are listed as "also"), and the median
detection latency in steps after the fault is visible. The expected alert of each demo is its docstring's
"Fault (id, ...)"; healthy demos say "Healthy". `healthy_ddp` runs under `torchrun --nproc_per_node=2`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(REPO, "demos")
CORPUS = os.path.join(REPO, "bench", "corpus")
WARNING_OR_WORSE = {"warning", "critical"}
# Faults that only become visible after some training start at the step of the best validation loss (the
# model overfits, or stops improving, from there). Static faults (data, model, loss, optimiser set-up, a learning
# rate wrong from the start) are visible at step 0.
VISIBLE_FROM_BEST_VAL = {"fault_overfitting", "fault_overfitting_mild", "fault_val_plateau", "fault_val_plateau_late"}
# Corpus faults that begin with a later phase of training (bench/corpus/f_phase_*): visible from its first step.
VISIBLE_FROM_PHASE_PREFIX = "f_phase_"
# Demos that need a launcher: the command before the script.
LAUNCHER = {"healthy_ddp": ["torchrun", "--nproc_per_node=2"]}


def expected(name: str, folder: str = DEMOS) -> tuple[str, set[str]]:
    with open(os.path.join(folder, name + ".py")) as fh:
        doc = ast.get_docstring(ast.parse(fh.read())) or ""
    m = re.match(r"Fault \(([^)]*)\)", doc)
    return ("fault", {s.strip() for s in m.group(1).split(",")}) if m else ("healthy", set())


def command(name: str, folder: str = DEMOS) -> list[str]:
    script = os.path.join(folder, name + ".py")
    launcher = LAUNCHER.get(name)
    if launcher is None:
        return [sys.executable, script]
    exe = os.path.join(os.path.dirname(sys.executable), launcher[0])
    return [exe if os.path.exists(exe) else (shutil.which(launcher[0]) or launcher[0]), *launcher[1:], script]


def run_demo(name: str, workdir: str, folder: str = DEMOS, every: int | None = None) -> tuple[dict, float, str]:
    rec = os.path.join(workdir, f"{name}{'' if every is None else f'-every{every}'}.accmon")
    env = dict(os.environ)
    if every:
        env["ACCMON_EVERY"] = str(every)
    elif every == 0:
        env.pop("ACCMON_EVERY", None)  # the probe's own schedule
    t0 = time.perf_counter()
    ran = subprocess.run([sys.executable, "-m", "accmon.tui.cli", "run", "--headless", "--record", rec, "--",
                          *command(name, folder)], capture_output=True, text=True, timeout=900, env=env, cwd=folder)
    elapsed = time.perf_counter() - t0
    with open(rec[:-len(".accmon")] + ".log", "w") as fh:  # the script's own output: did it train, did its bug show
        fh.write(ran.stdout + ran.stderr)
    out = subprocess.run([sys.executable, "-m", "accmon.tui.cli", "check", rec, "--json"], capture_output=True, text=True)
    if out.returncode == 2:
        return {"run": {}, "alerts": [], "error": out.stderr.strip()}, elapsed, rec
    return json.loads(out.stdout), elapsed, rec


# What the probe samples (accmon.probe.torch.cadence: the grads and deep tiers); everything else is every step.
SAMPLED_PREFIXES = ("grad_norm/", "weight_norm", "update_ratio", "nonfinite_grads", "act_", "input_", "batch_", "pred_")
SAMPLED_NAMES = {"grad_norm"}


# The machine's timing alerts are info by design (a timing depends on the machine: they never fail `check`), and
# are what they are: found when they fire, a false alarm when they fire on a healthy run.
MACHINE_IDS = frozenset({"input_bound", "throughput_drop"})


def counted(a: dict) -> bool:
    """An alert the table counts: warning or worse, or one of the machine's info alerts."""
    return a.get("severity") in WARNING_OR_WORSE or a.get("id") in MACHINE_IDS


def sampled(name: str) -> bool:
    return name in SAMPLED_NAMES or name.startswith(SAMPLED_PREFIXES)


def label(every: int) -> str:
    return "schedule" if every == 0 else f"every {every}"


def takes(step: int, every: int) -> bool:
    """Whether a probe with ACCMON_EVERY=`every` (0: its own schedule) samples `step`."""
    if every == 0:
        from accmon.probe.torch.cadence import interval_at

        return step % interval_at(step) == 0
    return step % every == 0


def resampled(rec: str, every: int) -> list[dict]:
    """The recording's frames as a probe with ACCMON_EVERY=`every` would have sent them (see the docstring)."""
    from accmon.probe.recording import RecordingReader

    frames = []
    for f in RecordingReader(rec).frames():
        if every != 1 and f["kind"] == "steps":
            f = dict(f)
            keep = [takes(s, every) for s in f["steps"]]
            f["cols"] = {k: ([v if k_ else None for v, k_ in zip(vals, keep)] if sampled(k) else vals)
                         for k, vals in f["cols"].items()}
            if f.get("hists"):
                share = sum(keep) / max(len(keep), 1)
                f["hists"] = {k: [c * share for c in v] for k, v in f["hists"].items()}
        frames.append(f)
    return frames


def diagnose(rec: str, every: int) -> dict:
    from accmon.tui.check import summarize

    summary, alerts = summarize(resampled(rec, every))
    return {"run": {"steps": summary.steps}, "alerts": alerts}


def best_val_step(rec: str) -> int:
    """The step of the lowest validation loss in a recording (rank 0), or 0."""
    from accmon.probe.recording import RecordingReader

    best, at = float("inf"), 0
    for f in RecordingReader(rec).frames():
        if f["kind"] != "steps" or f.get("rank", 0) != 0:
            continue
        for s, v in zip(f["steps"], f["cols"].get("val_loss", ())):
            if isinstance(v, (int, float)) and v == v and v < best:
                best, at = v, s
    return at


def phase_start(rec: str) -> int:
    """The first step of the recording's first phase after the first (the `phases` fact), or 0."""
    from accmon.probe.recording import RecordingReader

    start = 0
    for f in RecordingReader(rec).frames():
        if f["kind"] == "facts" and isinstance(f.get("facts"), dict) and f["facts"].get("phases"):
            start = min(p["start"] for p in f["facts"]["phases"])
    return start


def option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str]) -> None:
    table = "--table" in argv
    folder = CORPUS if "--corpus" in argv else DEMOS
    every_opt = option(argv, "--every")
    cadences = [int(k) for k in every_opt.split(",")] if every_opt else None
    live = "--live" in argv
    reuse = option(argv, "--reuse")  # a folder of an earlier run's recordings: diagnose them again, run nothing
    skip = {option(argv, "--every"), reuse}
    names = [a for a in argv if not a.startswith("--") and a not in skip]
    names = names or sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
    if cadences is None:
        return main_single(names, table, folder)
    workdir = tempfile.mkdtemp(prefix="accmon-detect-")
    detected = {k: 0 for k in cadences}
    faults = healthy = agree = 0
    false_alarms = {k: 0 for k in cadences}
    noisy_healthy: set[str] = set()
    latencies: dict[int, list[int]] = {k: [] for k in cadences}
    rows: list[str] = []
    for name in names:
        kind, ids = expected(name, folder)
        reports: dict[int, dict] = {}
        t0 = time.perf_counter()
        rec = ""
        if live:
            for k in cadences:
                done = os.path.join(reuse, f"{name}-every{k}.accmon") if reuse else ""
                if done and os.path.exists(done):
                    rec = done  # a live run's recording at this cadence: diagnosed as it was recorded
                    reports[k] = diagnose(rec, 1)
                else:
                    reports[k], _, rec = run_demo(name, workdir, folder, every=k)
        elif reuse and os.path.exists(os.path.join(reuse, f"{name}-every1.accmon")):
            rec = os.path.join(reuse, f"{name}-every1.accmon")  # re-diagnose an earlier run's recording
            for k in cadences:
                reports[k] = diagnose(rec, k)
        else:
            _, _, rec = run_demo(name, workdir, folder, every=1)
            for k in cadences:
                try:
                    reports[k] = diagnose(rec, k)
                except Exception as exc:  # an unreadable recording: the run did not get that far
                    reports[k] = {"run": {}, "alerts": [], "error": repr(exc)}
        elapsed = time.perf_counter() - t0
        fired = {k: {a["id"] for a in r["alerts"] if counted(a)} for k, r in reports.items()}
        same = len({frozenset(v) for v in fired.values()}) == 1
        agree += same
        steps = reports[cadences[0]].get("run", {}).get("steps", 0)
        cells = []
        lat_cells = []
        for k in cadences:
            f = fired[k]
            if kind == "fault":
                hit = bool(ids & f)
                detected[k] += hit
                if hit:
                    visible = (best_val_step(rec) if name in VISIBLE_FROM_BEST_VAL or "overfitting" in ids
                               else phase_start(rec) if name.startswith(VISIBLE_FROM_PHASE_PREFIX) else 0)
                    first = min(a["step"] for a in reports[k]["alerts"]
                                if a["id"] in ids and counted(a))
                    latencies[k].append(max(0, first - visible))
                    lat_cells.append(str(max(0, first - visible)))
                else:
                    lat_cells.append("-")
                cells.append(("yes" if hit else "**missed**") + (f" (+{', '.join(sorted(f - ids))})" if f - ids else ""))
            else:
                false_alarms[k] += len(f)
                if f:
                    noisy_healthy.add(name)
                cells.append("quiet" if not f else "**false alarm: " + ", ".join(sorted(f)) + "**")
        faults += kind == "fault"
        healthy += kind == "healthy"
        print(f"{name:<30} {kind:<7} {steps:>5} steps {elapsed:5.1f}s  "
              + "  ".join(f"{label(k)}: {', '.join(sorted(fired[k])) or '-'}" for k in cadences)
              + ("" if same else "  DIFFERS ACROSS CADENCES")
              + ("" if kind == "healthy" else f"  expected {', '.join(sorted(ids))}"), flush=True)
        expect = ", ".join(f"`{i}`" for i in sorted(ids)) or "none"
        rows.append(f"| `{name}` | {expect} | " + " | ".join(cells) + f" | {'yes' if same else '**no**'} | "
                    + (" / ".join(lat_cells) if kind == "fault" else "-") + f" | {steps} |")
    print()
    for k in cadences:
        lat = latencies[k]
        print(f"{label(k)}: recall {detected[k]}/{faults}; false alarms {false_alarms[k]} on "
              f"{healthy} healthy runs; median latency {statistics.median(lat) if lat else float('nan'):.0f} steps")
    print(f"healthy runs with any false alarm at any cadence: {len(noisy_healthy)}/{healthy}"
          f"{' (' + ', '.join(sorted(noisy_healthy)) + ')' if noisy_healthy else ''}")
    print(f"same alert ids at every cadence: {agree}/{len(names)}; recordings and the scripts' output in {workdir}")
    if table:
        print("\n| case | expected | " + " | ".join(label(k) for k in cadences)
              + " | same ids | latency (steps) | steps |")
        print("|---|---|" + "---|" * len(cadences) + "---|---|---|")
        print("\n".join(rows))


def main_single(names: list[str], table: bool, folder: str) -> None:
    workdir = tempfile.mkdtemp(prefix="accmon-detect-")
    detected = faults = false_alarms = 0
    latencies: list[int] = []
    rows: list[str] = []
    for name in names:
        kind, ids = expected(name, folder)
        report, elapsed, rec = run_demo(name, workdir, folder)
        fired = [a for a in report["alerts"] if counted(a)]
        fired_ids = {a["id"] for a in fired}
        steps = report.get("run", {}).get("steps", 0)
        line = f"{name:<34} {kind:<7} {steps:>5} steps {elapsed:5.1f}s  fired: {', '.join(sorted(fired_ids)) or '-'}"
        verdict, latency, visible = "-", "-", 0
        if kind == "fault":
            faults += 1
            hit = bool(ids & fired_ids)
            detected += hit
            visible = best_val_step(rec) if name in VISIBLE_FROM_BEST_VAL else 0
            if hit:
                first = min(a["step"] for a in fired if a["id"] in ids)
                latencies.append(max(0, first - visible))
                line += f"  → detected at step {first}" + (f" (visible from step {visible})" if visible else "")
                verdict, latency = "yes", str(max(0, first - visible))
            else:
                info = [a for a in report["alerts"] if a["id"] in ids]
                if info:
                    line += f"  → info only at step {min(a['step'] for a in info)} (expected {', '.join(sorted(ids))})"
                    verdict = "info only"
                else:
                    line += f"  → MISSED (expected {', '.join(sorted(ids))})"
                    verdict = "**missed**"
            also = fired_ids - ids
            if also:  # symptoms of the same fault (a diverging run's NaN loss), listed, not counted as false alarms
                line += f"  also: {', '.join(sorted(also))}"
        elif fired_ids:
            false_alarms += len(fired_ids)
            line += f"  FALSE ALARM: {', '.join(sorted(fired_ids))}"
            verdict = "**false alarm: " + ", ".join(sorted(fired_ids)) + "**"
        else:
            verdict = "quiet"
        if report.get("disabled_rules"):
            line += "  rules disabled: " + ", ".join(f"{r['rule']} ({r['error']})" for r in report["disabled_rules"])
        if "error" in report:
            line += f"  (unreadable: {report['error']})"
        print(line, flush=True)
        expect = ", ".join(f"`{i}`" for i in sorted(ids)) or "none"
        others = ", ".join(sorted(fired_ids - ids)) or "-"
        rows.append(f"| `{name}` | {expect} | {verdict} | {latency} | {visible if kind == 'fault' else '-'} | {steps} | {others} |")
    print(f"\nrecall {detected}/{faults} faults detected; false alarms: {false_alarms}; "
          f"median detection latency: {statistics.median(latencies) if latencies else float('nan'):.0f} steps after the fault is visible")
    if table:
        print("\n| demo | expected | detected | latency (steps) | fault visible from step | steps | also fired |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
