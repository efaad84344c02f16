"""Frames of a small, deterministic run for the app's tests (no tests here: helpers shared by test_app_* files)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np

from accmon.probe import wire
from accmon.probe.recording import RecordingWriter

T0 = 1_700_000_000.0  # a fixed start time: nothing drawn depends on the test machine's clock
LAYERS = ["encoder.fc1", "encoder.fc2", "head"]


def frame(kind: str, seq: int, step: int = -1, *, rank: int = 0, run: str = "run1", t: float | None = None,
          **body: Any) -> dict[str, Any]:
    f = wire.envelope(kind, run, rank, seq, step, **body)
    f["t"] = T0 + max(step, 0) * 0.01 if t is None else t
    return wire.decode(wire.encode(f))  # exactly what a viewer receives


def meta(seq: int = 1, *, rank: int = 0, run: str = "run1", name: str = "mnist-mlp", world_size: int = 1) -> dict:
    return frame("meta", seq, rank=rank, run=run, name=name, host="gpu-node-7", pid=4242,
                 cmd=["python", "train.py"], started=T0, world_size=world_size, probe="0.1.0")


def facts(seq: int = 2, *, run: str = "run1") -> dict:
    return frame("facts", seq, run=run, facts={
        "model": {"name": "MLP", "params": 109386, "trainable_params": 109386, "output_activation": "none",
                  "layers": [{"name": n, "kind": "Linear", "params": 1000, "trainable": True} for n in LAYERS]},
        "loss": {"kind": "CrossEntropyLoss", "reduction": "mean"},
        "optimizer": [{"kind": "SGD", "param_groups": [{"lr": 0.1}], "params": 6, "covers_model": 1.0}],
        "task": "multiclass", "num_classes": 10, "batch_size": 64,
        "inputs": {"dtype": "float32", "shape": [64, 784], "min": 0.0, "max": 1.0, "mean": 0.13, "std": 0.31},
    })


def steps(seq: int, first: int, n: int, *, rank: int = 0, run: str = "run1", vanishing: bool = False,
          nan_at: int | None = None, val_every: int = 100, seed: int = 0) -> dict:
    """n training steps of a run that learns: loss falls, accuracy rises, per-layer gradients and activations."""
    s = np.arange(first, first + n)
    loss = 2.3 * np.exp(-s / 400.0) + 0.08 + 0.03 * np.sin(s / 7.0)
    acc = 1.0 - 0.9 * np.exp(-s / 300.0) - 0.02 * np.cos(s / 5.0)
    cols: dict[str, list] = {
        "loss": loss.tolist(),
        "acc": np.clip(acc, 0, 1).tolist(),
        "val_loss": [float(v + 0.1) if int(st) % val_every == val_every - 1 else None for st, v in zip(s, loss)],
        "val_acc": [float(v - 0.05) if int(st) % val_every == val_every - 1 else None for st, v in zip(s, acc)],
        "grad_norm": (1.0 + 0.2 * np.sin(s / 11.0)).tolist(),
        "lr": [0.1] * n,
        "epoch": (s // 500).astype(float).tolist(),
        "input_mean": [0.13] * n,
        "input_std": [0.31] * n,
        "batch_classes": [10.0] * n,
        "pred_top_frac": np.clip(0.9 * np.exp(-s / 300.0) + 0.1, 0, 1).tolist(),
    }
    for i, layer in enumerate(LAYERS):
        scale = 10.0 ** (-9 + 3 * i) if vanishing else 10.0 ** (-2 + 0.5 * i)
        cols[f"grad_norm/{layer}"] = (scale * (1 + 0.1 * np.sin(s / 13.0 + i))).tolist()
        cols[f"act_zero/{layer}"] = np.clip(0.1 + 0.25 * i + 0.01 * np.sin(s / 3.0), 0, 1).tolist()
        cols[f"act_sat/{layer}"] = np.clip(0.02 * i + 0.001 * s / max(1, n), 0, 1).tolist()
    if nan_at is not None and first <= nan_at < first + n:
        k = nan_at - first
        for name in ("loss", "grad_norm"):
            cols[name][k] = math.nan
    hists = {"target": [10.0] * 10, "pred": [40.0] + [6.0] * 8 + [12.0]}
    f = frame("steps", seq, int(s[-1]), rank=rank, run=run, t=T0 + float(s[-1]) * 0.01,
              steps=[int(x) for x in s], times=(T0 + s * 0.01).tolist(), cols=cols, hists=hists)
    return f


def alert(seq: int, alert_id: str, step: int, severity: str = "warning", *, rank: int = 0, run: str = "run1",
          state: str = "active", **extra: Any) -> dict:
    body = {"id": alert_id, "severity": severity, "step": step, "message": f"{alert_id.replace('_', ' ')} since step {step}",
            "evidence": {"metric": 1.5, "threshold": 1.0, "window": 50}, "fix": f"the fix for {alert_id}",
            "state": state, "last_step": step, "cleared_step": None, "rank": rank, **extra}
    return frame("alert", seq, step, rank=rank, run=run, alert=body)


def end(seq: int, step: int, status: str = "finished", error: str | None = None, *, run: str = "run1") -> dict:
    return frame("end", seq, step, run=run, status=status, error=error, total_steps=step + 1)


def run_frames(n_steps: int = 1500, per_frame: int = 250, *, alerts: bool = True, ended: str | None = "finished",
               vanishing: bool = False, nan_at: int | None = None, run: str = "run1") -> list[dict]:
    """A whole run: meta, facts, steps frames, two alerts, and (optionally) its end."""
    out = [meta(run=run), facts(run=run)]
    seq = 3
    for first in range(0, n_steps, per_frame):
        out.append(steps(seq, first, min(per_frame, n_steps - first), run=run, vanishing=vanishing, nan_at=nan_at))
        seq += 1
        if alerts and first <= 400 < first + per_frame:
            out.append(alert(seq, "lr_too_high", 400, "warning", run=run))
            seq += 1
        if alerts and first <= 1000 < first + per_frame:
            out.append(alert(seq, "vanishing_gradients", 1000, "critical", run=run,
                             explanation="the first layers' gradients are 1e6 times smaller than the last layer's"))
            seq += 1
    if ended:
        out.append(end(seq, n_steps - 1, ended, "RuntimeError: CUDA out of memory" if ended == "crashed" else None,
                       run=run))
    return out


def write_recording(path: Any, frames: list[dict]) -> str:
    w = RecordingWriter(str(path))
    w.write([wire.encode(f) for f in frames])
    w.close()
    return str(path)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def loaded(app: Any, pilot: Any, timeout: float = 30.0) -> None:
    """Wait until the app has ingested what its source holds: a replay's whole file with its rules child done;
    a live source's frames so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.sync_now()
        await pilot.pause()
        st = app.source.status
        if (st.loaded or app.source.kind != "replay") and st.rules != "running" and not app.source._q.q:
            app.sync_now()
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError("the source did not finish loading")
