"""Statistics of the input batch: overall range and spread, and how features compare with each other.

An unnormalised input (pixels 0–255, one feature in thousands beside one in thousandths) and a feature
that never varies are among the commonest causes of a stuck accuracy; both show in these numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .ledger import Columns, Decoder, Sums

WIDTH = 9


def first_tensor(args: tuple, kwargs: dict | None) -> torch.Tensor | None:
    """The batch a model was called with: its first tensor argument (positional, then keyword)."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, torch.Tensor):
                return a
    for a in args:
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return a[0]
        if isinstance(a, dict):
            for v in a.values():
                if isinstance(v, torch.Tensor):
                    return v
    return None


def input_part(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """[mean, std, min, max, feature std min, feature std max, constant features, feature |mean| max,
    smallest non-zero feature |mean|] and the feature count; None for non-float inputs (token ids).

    Built from sums, squares and min/max only: on CPU, torch's std() (Welford) is several times slower than
    these, and per-feature min/max separately beat aminmax(dim=0).
    """
    if not x.is_floating_point() or x.numel() == 0:
        return None
    x = x.detach()
    xf = x.reshape(x.shape[0], -1).float() if x.dim() >= 2 else x.reshape(-1, 1).float()
    n, features = xf.shape
    fmean = xf.mean(0)
    centred = xf - fmean
    fss = (centred * centred).sum(0)  # per-feature sum of squares about the feature mean
    mean = fmean.mean()
    # Total sum of squares about the grand mean = within-feature + between-feature parts.
    dev = fmean - mean
    total_ss = fss.sum() + n * (dev * dev).sum()
    std = (total_ss / max(xf.numel() - 1, 1)).sqrt()
    mn, mx = torch.aminmax(xf)
    if n >= 2:
        fstd = (fss / (n - 1)).sqrt()
        fs_min, fs_max = torch.aminmax(fstd)
        # A feature is constant when its min equals its max: exact, unlike a std of identical floats.
        const = (xf.amax(0) == xf.amin(0)).sum().float()
    else:
        fs_min = fs_max = const = torch.full((), float("nan"), device=x.device)
    am = xf.abs().mean(0)
    am_max = am.amax()
    am_min_nz = torch.where(am > 0, am, torch.full_like(am, float("inf"))).amin()
    return torch.stack([mean, std, mn, mx, fs_min, fs_max, const, am_max, am_min_nz]), features


NAMES = ("input_mean", "input_std", "input_min", "input_max", "input_feat_std_min", "input_feat_std_max")


class InputDecoder(Decoder):
    """The input_* metrics (docs/frames.md); several model calls in one step are averaged."""

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        feats = np.asarray(metas, dtype=np.float64)
        sums.add("in:n", rows, 1.0)
        for j, name in enumerate(NAMES):
            sums.add("in:" + name, rows, block[:, j])
        sums.add("in:const_frac", rows, block[:, 6] / feats)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(np.isfinite(block[:, 8]), block[:, 7] / block[:, 8], np.nan)
        sums.add("in:ratio", rows, ratio)

    def finish(self, sums: Sums, cols: Columns) -> None:
        got = sums.get("in:n")
        if got is None:
            return
        n, mask = got
        with np.errstate(invalid="ignore", divide="ignore"):
            for name in (*NAMES, "const_frac", "ratio"):
                s = sums.get("in:" + name)
                if s is None:
                    continue
                out = {"const_frac": "input_const_frac", "ratio": "input_feat_absmax_ratio"}.get(name, name)
                vals = s[0] / n
                cols.put_where(out, vals, mask & np.isfinite(vals) if name in ("ratio", "const_frac") else mask)
