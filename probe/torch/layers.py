"""Per-layer gradient norms, weight norms and update ratios: one foreach kernel per statistic, on the device.

Parameters are grouped by layer (the module that owns them) on the host, once per layout; the device only
computes one norm per parameter tensor (`torch._foreach_norm`), and the host folds those into layer norms
(a layer's norm is the root of the sum of its parameters' squared norms) when the numbers arrive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .ledger import Columns, Decoder, Sums


class ParamLayout:
    """The layer of each parameter in a list, as indices into `layers`."""

    def __init__(self, layer_of_param: list[str]) -> None:
        self.layers: list[str] = list(dict.fromkeys(layer_of_param))
        pos = {name: i for i, name in enumerate(self.layers)}
        self.index = np.asarray([pos[n] for n in layer_of_param], dtype=np.intp)

    def fold(self, per_param_sq: np.ndarray) -> np.ndarray:
        """rows × params of squared norms → rows × layers of summed squares."""
        out = np.zeros((per_param_sq.shape[0], len(self.layers)))
        np.add.at(out.T, self.index, per_param_sq.T)
        return out


def norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One L2 norm per tensor, as one device vector (float32 even for half-precision tensors)."""
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))


def nonfinite_counts(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Finite-element count per tensor (the host subtracts from the sizes it already knows).

    One tensor at a time, so the temporaries never exceed one gradient's size. On CPU, t·0+1 summed with
    nansum (NaN and ±Inf become NaN and drop out) runs about 3× faster than isfinite().sum(), whose bool
    path is not vectorised; on GPUs isfinite() is fast and its bool temporary four times smaller.
    """
    if not tensors:
        return torch.zeros(0)
    dev = tensors[0].device
    if dev.type == "cpu":
        # float32 sums count ones exactly up to 2**24; other dtypes and larger tensors take isfinite().
        return torch.stack([(t * 0).add_(1).nansum() if t.dtype == torch.float32 and t.numel() <= _EXACT_F32
                            else torch.isfinite(t).sum().float() for t in tensors])
    return torch.stack([torch.isfinite(t).sum() for t in tensors])


_EXACT_F32 = 1 << 24


class NormDecoder(Decoder):
    """Squared per-parameter norms folded into per-layer sums under `<what>:<layer>` and `<what>` (all)."""

    def __init__(self, layout: ParamLayout, what: str, *, total: bool = True) -> None:
        self.layout = layout
        # "gsq" (gradients), "gssq" (gradient shards of a sharded model), "wsq" (weights before the step),
        # "usq" (the step's update)
        self.what = what
        self.total = total  # False when the parts cover a slice of the model: no overall figure then

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        sq = block.astype(np.float64) ** 2
        per_layer = self.layout.fold(sq)
        for j, layer in enumerate(self.layout.layers):
            sums.add(f"{self.what}:{layer}", rows, per_layer[:, j])
        if self.total:
            sums.add(self.what, rows, sq.sum(1))

    def finish(self, sums: Sums, cols: Columns) -> None:
        if not sums.once("norms"):
            return
        finish_norms(sums, cols)


def finish_norms(sums: Sums, cols: Columns) -> None:
    """grad_norm, weight_norm and update_ratio, overall and per layer, from the summed squares."""
    for name in list(sums.values):
        what, _, layer = name.partition(":")
        got = sums.get(name)
        assert got is not None
        vals, mask = got
        if what == "gsq":
            cols.put_where(f"grad_norm/{layer}" if layer else "grad_norm", np.sqrt(vals), mask)
        elif what == "gssq" and layer:
            # A shard's sum of squares: the viewer adds the ranks' and takes the root (docs/frames.md).
            cols.put_where(f"grad_sq/{layer}", vals, mask)
        elif what == "wsq" and layer:
            cols.put_where(f"weight_norm/{layer}", np.sqrt(vals), mask)
        elif what == "usq":
            # Overall: against the weights of the same slice of layers when the step covered a slice only.
            w = sums.get(f"wsq:{layer}") if layer else (sums.get("wsqs") or sums.get("wsq"))
            if w is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.sqrt(vals) / np.sqrt(w[0])
            cols.put_where(f"update_ratio/{layer}" if layer else "update_ratio", ratio, mask & w[1])


class NonfiniteDecoder(Decoder):
    """NaN/Inf gradient elements of a step: sizes (host) minus finite counts (device)."""

    def __init__(self, sizes: list[int]) -> None:
        self.total = float(sum(sizes))

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        sums.add("nonfinite", rows, self.total - block.sum(1))

    def finish(self, sums: Sums, cols: Columns) -> None:
        got = sums.get("nonfinite")
        if got is not None and sums.once("nonfinite"):
            cols.put_where("nonfinite_grads", got[0], got[1], integer=True)
