"""bench/gpu_check.py (issue 20) in its CPU mode: it runs end to end and its summary says, claim by claim, what was
skipped for want of a GPU.

One real run of the script (about 15 s on an idle 2-core machine, 30-45 s on a loaded one: five Python processes
start, four of them import torch): two `accmon run --headless --record` of its training loops, `accmon check
--json` on both recordings, the CUDA test through pytest, the presence checks. `--device cpu` keeps the test the
same on a machine with a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("torch")

GPU_CLAIMS = {"sync_free/cnn", "sync_free/gpt", "cost/cnn", "cost/gpt",
              "cuda_test/test_no_sync_on_cuda_under_sync_debug_mode"}
OTHER_ISSUES = {"cuda_memory_counters", "nvml_sampling", "stop_on"}


@pytest.mark.slow
def test_gpu_check_on_cpu_runs_everything_it_can_and_says_what_it_skipped(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)  # the summary is the only thing on stdout, printed last
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["gpu"] is False and summary["ok"] is True and summary["failed"] == []

    claims = {c["id"]: c for c in summary["claims"]}
    assert set(claims) == GPU_CLAIMS | OTHER_ISSUES
    for cid in GPU_CLAIMS:
        assert claims[cid]["status"] == "skipped: no GPU", claims[cid]
    for cid in OTHER_ISSUES:  # absent until issues 18 and 19 land; then present, but still GPU-only
        assert claims[cid]["status"] in ("skipped: no GPU", "not present in this tree"), claims[cid]
    assert set(summary["skipped_for_want_of_a_gpu"]) >= GPU_CLAIMS
    assert "skipped by the test itself" in claims["cuda_test/test_no_sync_on_cuda_under_sync_debug_mode"]["detail"]

    # What runs without a GPU did run: the injected probe recorded every probed step of both loops.
    checks = {c["id"]: c for c in summary["checks"]}
    assert {"environment", "zero_code_run/cnn", "recording/cnn", "zero_code_run/gpt", "recording/gpt"} <= set(checks)
    assert all(c["status"] == "pass" for c in checks.values()), checks
    for m in ("cnn", "gpt"):
        child = json.loads((out / f"{m}.child.json").read_text())
        assert child["injected"] and child["probe"]["steps_seen"] == child["probed_steps"] > 0
        assert child["sync"]["flush_steps"] > 0
        assert (out / f"{m}.accmon").stat().st_size > 0
    log = (out / "gpu_check.log").read_text()
    assert "No GPU here" in log
