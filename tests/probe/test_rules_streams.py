"""Synthetic frame streams for the rules tests: realistic noisy training runs, healthy or with one fault.

A stream is what the PyTorch probe sends (docs/frames.md): facts about the model, loss, targets and inputs;
steps frames whose cheap metrics come every step and whose per-layer statistics come every few steps (the
probe samples them); validation metrics at the end of each epoch; class histograms per frame. Faults are
made by changing the parameters or overriding columns, so each test says what it changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from accmon.probe import wire
from accmon.probe.rules import Diagnoser

Override = Callable[[int, Any], Any]  # (step, value the healthy run would have) -> value to send


@dataclass
class Sim:
    """A training run, described by its curves; `frames()` renders it."""

    steps: int = 600
    epoch_steps: int = 50
    classes: int = 4
    batch: int = 64
    # Hidden layers as (name, activation module kind); the output layer follows.
    hidden: tuple[tuple[str, str], ...] = (("0", "Linear"), ("1", "ReLU"), ("2", "Linear"), ("3", "ReLU"))
    output: str = "4"
    output_activation: str = "none"
    loss_kind: str = "CrossEntropyLoss"
    task: str = "multiclass"
    optimizer: str = "Adam"
    lr: float = 1e-3
    # The loss curve: start, floor, time scale (steps) and multiplicative noise of a batch's loss.
    loss0: float | None = None  # default: ln(classes), where a fresh classifier starts
    loss_floor: float = 0.15
    tau: float = 60.0
    noise: float = 0.15
    final_acc: float = 0.93
    val_gap: float = 1.08  # validation loss / smoothed training loss
    sample_every: int = 8  # per-layer statistics every n steps (and every step of the first 8)
    frame_steps: int = 50
    class_shares: tuple[float, ...] | None = None  # None: balanced
    shuffled: bool | None = True
    inputs: dict[str, float] = field(default_factory=lambda: {"mean": 0.02, "std": 1.0, "min": -4.1, "max": 4.3,
                                                              "feat_absmax_ratio": 2.5, "const_frac": 0.0})
    targets: dict[str, Any] | None = None  # overrides of the targets facts
    predictions: dict[str, Any] | None = None
    extra_facts: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Override] = field(default_factory=dict)
    seed: int = 0

    # -- curves -----------------------------------------------------------------------------------------
    @property
    def start_loss(self) -> float:
        return self.loss0 if self.loss0 is not None else math.log(self.classes)

    def smooth_loss(self, step: int) -> float:
        progress = (1 + step / self.tau) ** -0.7
        return self.loss_floor + (self.start_loss - self.loss_floor) * progress

    def chance(self) -> float:
        return max(self.class_shares) if self.class_shares else 1.0 / self.classes

    def smooth_acc(self, step: int) -> float:
        learned = 1 - (self.smooth_loss(step) - self.loss_floor) / max(self.start_loss - self.loss_floor, 1e-9)
        return self.chance() + (self.final_acc - self.chance()) * learned

    def layers(self) -> list[str]:
        return [n for n, kind in self.hidden if kind in ("Linear", "Conv2d")] + [self.output]

    # -- frames -----------------------------------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        layers = [{"name": n, "kind": k, "params": 1000 if k in ("Linear", "Conv2d") else 0,
                   "trainable": k in ("Linear", "Conv2d")} for n, k in self.hidden]
        layers.append({"name": self.output, "kind": "Linear", "params": 260, "trainable": True})
        params = sum(layer["params"] for layer in layers)
        binary = self.task == "binary"
        out_shape = [self.batch, 1] if binary else [self.batch, self.classes]
        targets = {"dtype": "float32" if binary else "int64", "shape": [self.batch, 1] if binary else [self.batch],
                   "min": 0.0, "max": float(1 if binary else self.classes - 1), "distinct": 2 if binary else self.classes,
                   "integral": True, "one_hot": False}
        targets.update(self.targets or {})
        predictions = {"shape": out_shape, "dtype": "float32", "min": -2.1, "max": 2.4, "rows_sum_to_one": False,
                       "logsumexp_zero": False}
        predictions.update(self.predictions or {})
        inputs = {"dtype": "float32", "shape": [self.batch, 20], "features": 20, "mean": self.inputs["mean"],
                  "std": self.inputs["std"], "min": self.inputs["min"], "max": self.inputs["max"],
                  "feat_std_min": 0.8, "feat_std_max": 1.2,
                  "const_features": round(20 * self.inputs["const_frac"])}
        facts: dict[str, Any] = {
            "framework": "torch", "task": self.task, "num_classes": 2 if binary else self.classes,
            "loss": {"kind": self.loss_kind, "reduction": "mean", "via": "module"},
            "model": {"name": "Sequential", "params": params, "trainable_params": params, "layers": layers,
                      "output_activation": self.output_activation},
            "optimizer": [{"kind": self.optimizer, "param_groups": [{"lr": self.lr}], "params": params,
                           "covers_model": 1.0}],
            "targets": targets, "predictions": predictions, "inputs": inputs, "batch_size": self.batch,
            "shuffled": self.shuffled, "epoch_steps": self.epoch_steps,
        }
        facts.update(self.extra_facts)
        return facts

    def columns(self, step: int, rng: random.Random) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        loss = self.smooth_loss(step) * math.exp(rng.gauss(0, self.noise))
        p = min(max(self.smooth_acc(step), 0.0), 1.0)
        acc = sum(rng.random() < p for _ in range(self.batch)) / self.batch
        cols.update(loss=loss, acc=acc, lr=self.lr, epoch=step // self.epoch_steps, step_time=0.01,
                    samples_per_s=self.batch / 0.01)
        deep = step < 8 or step % self.sample_every == 0
        learned = 1 - (self.smooth_loss(step) - self.loss_floor) / max(self.start_loss - self.loss_floor, 1e-9)
        grad_scale = 0.3 + 1.5 * (1 - learned)
        layer_names = self.layers()
        for i, name in enumerate(layer_names):
            # Gradients grow mildly toward the output, as in the healthy demos (ratio input/output 0.3-0.6).
            g = grad_scale * (0.4 + 0.6 * i / max(len(layer_names) - 1, 1)) * math.exp(rng.gauss(0, 0.2))
            cols[f"grad_norm/{name}"] = g if deep else None
            cols[f"update_ratio/{name}"] = 0.004 * math.exp(rng.gauss(0, 0.3)) if deep else None
            cols[f"weight_norm/{name}"] = 4.0 + 0.001 * step if deep else None
        cols["grad_norm"] = math.sqrt(sum(cols[f"grad_norm/{n}"] ** 2 for n in layer_names)) if deep else None
        cols["update_ratio"] = 0.004 * math.exp(rng.gauss(0, 0.2)) if deep else None
        cols["nonfinite_grads"] = 0 if deep else None
        for name, kind in self.hidden:
            if kind == "ReLU":
                cols[f"act_zero/{name}"] = min(0.9, 0.5 + 0.05 * rng.random() + 0.1 * learned) if deep else None
            if kind in ("Sigmoid", "Tanh"):
                cols[f"act_sat/{name}"] = 0.05 + 0.05 * rng.random() if deep else None
            cols[f"act_mean/{name}"] = 0.3 if deep else None
            cols[f"act_std/{name}"] = 0.5 if deep else None
        for key, value in (("mean", self.inputs["mean"]), ("std", self.inputs["std"]), ("min", self.inputs["min"]),
                           ("max", self.inputs["max"])):
            cols[f"input_{key}"] = value * (1 + rng.gauss(0, 0.02)) if deep else None
        cols["input_feat_std_min"] = 0.8 if deep else None
        cols["input_feat_std_max"] = 1.2 if deep else None
        cols["input_feat_absmax_ratio"] = self.inputs["feat_absmax_ratio"] if deep else None
        cols["input_const_frac"] = self.inputs["const_frac"] if deep else None
        k = 2 if self.task == "binary" else self.classes
        shares = self.class_shares or tuple([1.0 / k] * k)
        top = max(shares)
        cols["batch_top_frac"] = min(1.0, top + abs(rng.gauss(0, 0.05))) if deep else None
        cols["batch_top_class"] = shares.index(top) if deep else None
        cols["batch_classes"] = k if deep else None
        # Predictions spread over classes as the model learns (a fresh model is less decided).
        cols["pred_top_frac"] = min(1.0, top + 0.1 * (1 - learned) + abs(rng.gauss(0, 0.04))) if deep else None
        if (step + 1) % self.epoch_steps == 0:
            cols["val_loss"] = self.smooth_loss(step) * self.val_gap * math.exp(rng.gauss(0, 0.01))
            cols["val_acc"] = max(0.0, self.smooth_acc(step) - 0.02)
        else:
            cols["val_loss"] = cols["val_acc"] = None
        for name, fn in self.overrides.items():
            cols[name] = fn(step, cols.get(name))
        return cols

    def hist(self, n_steps: int, rng: random.Random) -> list[float]:
        k = 2 if self.task == "binary" else self.classes
        shares = self.class_shares or tuple([1.0 / k] * k)
        return [round(s * self.batch * n_steps) for s in shares]

    def frames(self, *, end: bool = True) -> list[dict[str, Any]]:
        rng = random.Random(self.seed)
        seq = iter(range(1, 10**9))
        run = "sim"
        frames = [wire.envelope("meta", run, 0, next(seq), -1, name="sim", host="h", pid=1, cmd=["x"], started=0.0,
                                world_size=1, probe="test"),
                  wire.envelope("facts", run, 0, next(seq), -1, facts=self.facts())]
        for start in range(0, self.steps, self.frame_steps):
            steps = list(range(start, min(start + self.frame_steps, self.steps)))
            rows = [self.columns(s, rng) for s in steps]
            names = list(dict.fromkeys(n for r in rows for n in r))
            cols = {n: [r.get(n) for r in rows] for n in names}
            cols = {n: v for n, v in cols.items() if any(x is not None for x in v)}
            sampled = sum(1 for s in steps if s < 8 or s % self.sample_every == 0)
            hists = {"target": self.hist(sampled, rng)} if sampled else None
            body: dict[str, Any] = {"steps": steps, "times": [float(s) for s in steps], "cols": cols}
            if hists:
                body["hists"] = hists
            frames.append(wire.envelope("steps", run, 0, next(seq), steps[-1], **body))
        if end:
            frames.append(wire.envelope("end", run, 0, next(seq), self.steps - 1, status="finished", error=None,
                                        total_steps=self.steps))
        return frames

    def with_(self, **changes: Any) -> Sim:
        return replace(self, **changes)


def feed(frames: list[dict[str, Any]], d: Diagnoser | None = None) -> tuple[Diagnoser, list[dict[str, Any]]]:
    """Run frames through a Diagnoser (through the wire encoding, as the real ones travel)."""
    d = d or Diagnoser()
    changed = []
    for f in frames:
        changed += d.observe(wire.decode(wire.encode(f)))
    return d, changed


def fired(d: Diagnoser, severity: tuple[str, ...] = ("warning", "critical")) -> dict[str, dict[str, Any]]:
    """Alerts of these severities, by 'id' or 'id/cause'."""
    out = {}
    for a in d.alerts():
        if a["severity"] in severity:
            out[a["id"]] = a
            if a.get("cause"):
                out[f"{a['id']}/{a['cause']}"] = a
    return out


def active(d: Diagnoser) -> set[str]:
    return {a["id"] for a in d.alerts() if a["state"] == "active"}


def constant(value: Any) -> Override:
    return lambda step, old: value if old is not None else None


def after(step0: int, fn: Override) -> Override:
    """Apply `fn` from step0 on; before it, the healthy value."""
    return lambda step, old: fn(step, old) if step >= step0 else old


# -- the stream itself ---------------------------------------------------------------------------------

def test_streams_are_valid_frames_with_sparse_layer_statistics():
    frames = Sim(steps=120).frames()
    kinds = [f["kind"] for f in frames]
    assert kinds[:2] == ["meta", "facts"] and kinds[-1] == "end" and kinds.count("steps") == 3
    steps = frames[2]
    decoded = wire.decode(wire.encode(steps))
    assert decoded["steps"] == list(range(50))
    grads = decoded["cols"]["grad_norm/0"]
    assert grads[:8] == [g for g in grads[:8] if g is not None]  # the first steps are all sampled
    assert grads[9] is None and grads[16] is not None
    assert decoded["cols"]["val_loss"][49] is not None and decoded["cols"]["val_loss"][48] is None


def test_the_healthy_curve_learns():
    sim = Sim()
    assert sim.smooth_loss(0) > 1.3 > 0.6 > sim.smooth_loss(500)
    assert sim.smooth_acc(0) == 0.25 and sim.smooth_acc(500) > 0.75
