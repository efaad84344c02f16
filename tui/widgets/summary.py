"""What the run is made of: model, loss, optimizer, task, and what goes in (inputs) and comes out (labels)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.style import Style
from rich.text import Text

from ..store import RankData, RunStore
from . import fmt
from .palette import palette

INPUT_COLS = ("input_mean", "input_std", "input_min", "input_max", "input_feat_std_min", "input_feat_std_max",
              "input_feat_absmax_ratio", "input_const_frac")
BATCH_COLS = ("batch_classes", "batch_top_class", "batch_top_frac", "pred_top_frac")
MAX_CLASSES = 12  # class bars shown; the rest are summed into one line


def _kv(t: Text, key: str, value: Any, dim: Style) -> None:
    t.append(f"  {key}: ", style=dim)
    t.append(f"{value}\n")


def summary_text(store: RunStore, data: RankData | None, *, dark: bool = True, width: int = 80) -> Text:
    pal = palette(dark)
    dim = Style(color=pal.dim)
    head = Style(bold=True)
    f = store.facts
    t = Text()
    model = f.get("model") if isinstance(f.get("model"), dict) else {}
    t.append("Model\n", style=head)
    if model:
        _kv(t, "name", model.get("name", "?"), dim)
        if isinstance(model.get("params"), (int, float)):
            trainable = model.get("trainable_params")
            _kv(t, "parameters", f"{int(model['params']):,}" + (f" ({int(trainable):,} trainable)"
                                                                  if isinstance(trainable, (int, float)) else ""), dim)
        layers = model.get("layers")
        if isinstance(layers, list):
            kinds = [str(layer.get("kind", "?")) for layer in layers if isinstance(layer, dict)]
            _kv(t, "layers", f"{len(kinds)}: " + " → ".join(kinds[:12]) + (" → …" if len(kinds) > 12 else ""), dim)
        if model.get("output_activation"):
            _kv(t, "output activation", model["output_activation"], dim)
    else:
        t.append("  (not reported)\n", style=dim)
    loss = f.get("loss") if isinstance(f.get("loss"), dict) else None
    if loss:
        _kv(t, "loss", f"{loss.get('kind', '?')} (reduction {loss.get('reduction', '?')})", dim)
    opts = f.get("optimizer")
    if isinstance(opts, list):
        for o in opts:
            if isinstance(o, dict):
                groups = o.get("param_groups") or []
                lrs = ", ".join(fmt.num(g.get("lr")) for g in groups if isinstance(g, dict))
                _kv(t, "optimizer", f"{o.get('kind', '?')} lr {lrs}", dim)
    for key in ("task", "num_classes", "batch_size", "epoch_steps", "shuffled", "framework"):
        if key in f:
            _kv(t, key.replace("_", " "), f[key], dim)
    t.append("\nInputs", style=head)
    t.append("  (newest batch)\n" if data is not None and data.latest("input_mean") is not None else "\n", style=dim)
    raw_inputs = f.get("inputs")
    inputs: dict = raw_inputs if isinstance(raw_inputs, dict) else {}
    if inputs.get("shape") is not None:
        _kv(t, "shape", f"{inputs.get('shape')} {inputs.get('dtype', '')}", dim)
    shown = False
    if data is not None:
        for name in INPUT_COLS:
            v = data.latest(name)
            if v is not None:
                _kv(t, name.removeprefix("input_").replace("_", " "), fmt.num(v, 8), dim)
                shown = True
    if not shown:
        for key in ("mean", "std", "min", "max", "feat_std_min", "feat_std_max", "const_features"):
            if key in inputs:
                _kv(t, key.replace("_", " "), fmt.num(inputs[key], 8) if isinstance(inputs[key], float) else inputs[key], dim)
                shown = True
    if not shown:
        t.append("  (not reported)\n", style=dim)
    t.append("\nLabels and predictions\n", style=head)
    targets = f.get("targets") if isinstance(f.get("targets"), dict) else {}
    if targets:
        _kv(t, "targets", ", ".join(f"{k} {v}" for k, v in targets.items()), dim)
    if data is not None:
        for name in BATCH_COLS:
            v = data.latest(name)
            if v is not None:
                _kv(t, name.replace("_", " "), fmt.num(v, 8), dim)
        _class_bars(t, data, pal, dim, width)
    return t


def _class_bars(t: Text, data: RankData, pal: Any, dim: Style, width: int) -> None:
    target = data.hists_total.get("target")
    pred = data.hists_total.get("pred")
    if target is None and pred is None:
        return
    n = max(len(target) if target is not None else 0, len(pred) if pred is not None else 0)
    tgt = np.zeros(n) if target is None else np.pad(target, (0, n - len(target)))
    prd = np.zeros(n) if pred is None else np.pad(pred, (0, n - len(pred)))
    tgt_share = tgt / tgt.sum() if tgt.sum() else tgt
    prd_share = prd / prd.sum() if prd.sum() else prd
    bar_w = max(4, min(30, (width - 24) // 2))
    t.append("  class   target share" + " " * max(1, bar_w - 11) + "predicted share\n", style=dim)
    order = np.argsort(-(tgt_share + prd_share))[:MAX_CLASSES]
    for c in sorted(order.tolist()):
        t.append(f"  {c:>5}  ", style=dim)
        tb = int(round(tgt_share[c] * bar_w))
        pb = int(round(prd_share[c] * bar_w))
        t.append("█" * tb + " " * (bar_w - tb), style=Style(color=pal.series[0]))
        t.append(f"{tgt_share[c]:4.0%} ", style=dim)
        t.append("█" * pb + " " * (bar_w - pb), style=Style(color=pal.series[1]))
        t.append(f"{prd_share[c]:4.0%}\n", style=dim)
    if n > MAX_CLASSES:
        t.append(f"  … {n - MAX_CLASSES} more classes\n", style=dim)
