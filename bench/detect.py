"""Detection benchmark (issue 4): every demo under `accmon run --headless --record`, then `accmon check --json`.

    .venv/bin/python bench/detect.py            # all demos
    .venv/bin/python bench/detect.py fault_nan_loss healthy_mlp
    .venv/bin/python bench/detect.py --table    # also a Markdown table (BENCHMARKS.md's Detection section)

Prints, per demo, the alerts that fired (warning or worse), and in all: recall (faults whose expected alert
fired at warning or worse; an expected alert that only reached info is listed as "info only", not counted),
false alarms (warning or worse on healthy runs; other ids on a faulty run are listed as "also"), and the median
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
WARNING_OR_WORSE = {"warning", "critical"}
# Faults that only become visible after some training start at the step of the best validation loss (the
# model overfits, or stops improving, from there). Static faults (data, model, loss, optimiser set-up, a learning
# rate wrong from the start) are visible at step 0.
VISIBLE_FROM_BEST_VAL = {"fault_overfitting", "fault_overfitting_mild", "fault_val_plateau", "fault_val_plateau_late"}
# Demos that need a launcher: the command before the script.
LAUNCHER = {"healthy_ddp": ["torchrun", "--nproc_per_node=2"]}


def expected(name: str) -> tuple[str, set[str]]:
    with open(os.path.join(DEMOS, name + ".py")) as fh:
        doc = ast.get_docstring(ast.parse(fh.read())) or ""
    m = re.match(r"Fault \(([^)]*)\)", doc)
    return ("fault", {s.strip() for s in m.group(1).split(",")}) if m else ("healthy", set())


def command(name: str) -> list[str]:
    script = os.path.join(DEMOS, name + ".py")
    launcher = LAUNCHER.get(name)
    if launcher is None:
        return [sys.executable, script]
    exe = os.path.join(os.path.dirname(sys.executable), launcher[0])
    return [exe if os.path.exists(exe) else (shutil.which(launcher[0]) or launcher[0]), *launcher[1:], script]


def run_demo(name: str, workdir: str) -> tuple[dict, float, str]:
    rec = os.path.join(workdir, name + ".accmon")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "accmon.tui.cli", "run", "--headless", "--record", rec, "--", *command(name)],
                   capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-m", "accmon.tui.cli", "check", rec, "--json"], capture_output=True, text=True)
    if out.returncode == 2:
        return {"run": {}, "alerts": [], "error": out.stderr.strip()}, elapsed, rec
    return json.loads(out.stdout), elapsed, rec


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


def main(argv: list[str]) -> None:
    table = "--table" in argv
    names = [a for a in argv if not a.startswith("--")]
    names = names or sorted(f[:-3] for f in os.listdir(DEMOS) if f.endswith(".py") and not f.startswith("_"))
    workdir = tempfile.mkdtemp(prefix="accmon-detect-")
    detected = faults = false_alarms = 0
    latencies: list[int] = []
    rows: list[str] = []
    for name in names:
        kind, ids = expected(name)
        report, elapsed, rec = run_demo(name, workdir)
        fired = [a for a in report["alerts"] if a.get("severity") in WARNING_OR_WORSE]
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
