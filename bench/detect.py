"""Detection benchmark (issue 4): every demo under `accmon run --headless --record`, then `accmon check --json`.

    .venv/bin/python bench/detect.py            # all demos
    .venv/bin/python bench/detect.py fault_nan_loss healthy_mlp

Prints, per demo, the alerts that fired (warning or worse), and in all: recall (faults whose expected alert
fired), false alarms (warning or worse on healthy runs; other ids on a faulty run are listed as "also"), and the median
detection latency in steps after the fault is visible. The expected alert of each demo is its docstring's
"Fault (id, ...)"; healthy demos say "Healthy".
"""

from __future__ import annotations

import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(REPO, "demos")
WARNING_OR_WORSE = {"warning", "critical"}
# Faults that only become visible after some training: the step from which a person could see them.
# Static faults (data, model, loss set-up) are visible at step 0.
VISIBLE_FROM_EPOCH = {"fault_overfitting": 5, "fault_val_plateau": 5}


def expected(name: str) -> tuple[str, set[str]]:
    with open(os.path.join(DEMOS, name + ".py")) as fh:
        doc = ast.get_docstring(ast.parse(fh.read())) or ""
    m = re.match(r"Fault \(([^)]*)\)", doc)
    return ("fault", {s.strip() for s in m.group(1).split(",")}) if m else ("healthy", set())


def run_demo(name: str, workdir: str) -> tuple[dict, float]:
    rec = os.path.join(workdir, name + ".accmon")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "accmon.tui.cli", "run", "--headless", "--record", rec, "--",
                    sys.executable, os.path.join(DEMOS, name + ".py")], capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-m", "accmon.tui.cli", "check", rec, "--json"], capture_output=True, text=True)
    if out.returncode == 2:
        return {"run": {}, "alerts": [], "error": out.stderr.strip()}, elapsed
    return json.loads(out.stdout), elapsed


def main(names: list[str]) -> None:
    names = names or sorted(f[:-3] for f in os.listdir(DEMOS) if f.endswith(".py") and not f.startswith("_"))
    workdir = tempfile.mkdtemp(prefix="accmon-detect-")
    detected = faults = false_alarms = 0
    latencies: list[int] = []
    for name in names:
        kind, ids = expected(name)
        report, elapsed = run_demo(name, workdir)
        fired = [a for a in report["alerts"] if a.get("severity") in WARNING_OR_WORSE]
        fired_ids = {a["id"] for a in fired}
        steps = report.get("run", {}).get("steps", 0)
        line = f"{name:<34} {kind:<7} {steps:>5} steps {elapsed:5.1f}s  fired: {', '.join(sorted(fired_ids)) or '-'}"
        if kind == "fault":
            faults += 1
            hit = bool(ids & fired_ids)
            detected += hit
            if hit:
                epoch_steps = max(1, steps // max(1, _epochs(report)))
                visible = VISIBLE_FROM_EPOCH.get(name, 0) * epoch_steps
                first = min(a["step"] for a in fired if a["id"] in ids)
                latencies.append(max(0, first - visible))
                line += f"  → detected at step {first}"
            else:
                line += f"  → MISSED (expected {', '.join(sorted(ids))})"
            also = fired_ids - ids
            if also:  # symptoms of the same fault (a diverging run's NaN loss), listed, not counted as false alarms
                line += f"  also: {', '.join(sorted(also))}"
        elif fired_ids:
            false_alarms += len(fired_ids)
            line += f"  FALSE ALARM: {', '.join(sorted(fired_ids))}"
        if "error" in report:
            line += f"  (unreadable: {report['error']})"
        print(line, flush=True)
    print(f"\nrecall {detected}/{faults} faults detected; false alarms: {false_alarms}; "
          f"median detection latency: {statistics.median(latencies) if latencies else float('nan'):.0f} steps after the fault is visible")


def _epochs(report: dict) -> int:
    return int(report.get("run", {}).get("epochs", 1) or 1)


if __name__ == "__main__":
    main(sys.argv[1:])
