"""Loss, accuracy and class histograms from a loss call's (output, target), computed on the device.

Every function here returns device tensors and never reads their values: the ledger brings them home later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import losses as L
from .ledger import Batched, Columns, Decoder, Sums

# Above this many classes (a language model's vocabulary) per-class histograms cost more than they tell.
MAX_HIST_CLASSES = 4096

def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def classes(rule: str, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(predicted, true) classes as tensors of one shape, or None when this pair cannot be read as classes."""
    if rule == L.ARGMAX:
        dim = 1 if output.dim() >= 2 else 0
        pred = output.argmax(dim)
        if target.is_floating_point():
            if target.shape != output.shape:
                return None
            true = target.argmax(dim)  # probabilities or one-hot rows
        else:
            true = target
        if pred.shape != true.shape:
            if pred.numel() != true.numel():
                return None
            true = true.reshape(pred.shape)
        return pred, true
    if rule in (L.PROB, L.LOGIT, L.SIGN):
        if output.numel() != target.numel():
            return None
        threshold = 0.5 if rule == L.PROB else 0.0
        pred = output.reshape(target.shape) > threshold
        true = target > (0.0 if rule == L.SIGN else 0.5)
        return pred, true
    return None


def accuracy_part(rule: str, pred: torch.Tensor, true: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, int | None]:
    """(tensor, total): the count of correct predictions, and the number counted when the shape tells it.

    With an ignore_index on sequence or pixel targets (padding, void labels) the total depends on the
    values: then the part is [correct, counted] and `total` is None. One label per sample (1-D targets) is
    counted in full: padding there is all but unheard of, and the check would double this function's cost.
    """
    # count_nonzero, not sum: a bool sum goes through the generic reduction, ~25 µs slower per step in a CNN loop.
    correct = torch.count_nonzero(pred == true)
    if rule == L.ARGMAX and ignore_index is not None and true.dim() > 1 and not true.is_floating_point():
        # Ignored targets (-100) never equal an argmax, so `correct` already leaves them out.
        counted = torch.count_nonzero(true != ignore_index)
        return torch.stack([correct, counted]), None
    return correct, true.numel()


class BatchedAccuracy(Batched):
    """[correct, counted] of many steps' (output, target) pairs of one layout, computed in one go.

    The pairs are concatenated along the batch dimension: `classes` works per sample, so each step's
    predictions stay a contiguous block of the result.
    """

    def __init__(self, rule: str, ignore_index: int | None) -> None:
        self.rule = rule
        self.ignore_index = ignore_index

    @staticmethod
    def takes(rule: str, output: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether a pair can be deferred: one with a batch dimension, that `classes` reads per sample."""
        return output.dim() >= (2 if rule == L.ARGMAX else 1) and target.dim() >= 1

    def compute(self, inputs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        n = len(inputs)
        output = torch.cat([i[0] for i in inputs])
        target = torch.cat([i[1] for i in inputs])
        got = classes(self.rule, output, target)
        if got is None:
            raise ValueError(f"outputs {tuple(output.shape)} and targets {tuple(target.shape)} are not classes")
        pred, true = got
        correct = (pred == true).reshape(n, -1).sum(1)
        if self.rule == L.ARGMAX and self.ignore_index is not None and true.dim() > 1 and not true.is_floating_point():
            counted = (true != self.ignore_index).reshape(n, -1).sum(1)
        else:
            counted = torch.full_like(correct, true.numel() // n)
        return torch.stack([correct, counted], 1)


def hist_part(rule: str, pred: torch.Tensor, true: torch.Tensor, num_classes: int, multilabel: bool) -> tuple[torch.Tensor, Any] | None:
    """Target and predicted class counts of one batch as one [2, K] part (K classes, or labels)."""
    if rule == L.ARGMAX:
        if num_classes > MAX_HIST_CLASSES:
            return None
        t = _flat(true).long()
        p = _flat(pred)
        # index_add_ instead of bincount: CUDA's bincount reads the maximum back to size its output (a sync).
        valid = ((t >= 0) & (t < num_classes)).long()
        tc = t.clamp(0, num_classes - 1)
        # Rows: targets, predictions, and correct predictions per target class (per-class recall).
        both = torch.zeros(3, num_classes, dtype=torch.long, device=t.device)
        both[0].index_add_(0, tc, valid)
        both[1].index_add_(0, p, valid)
        both[2].index_add_(0, tc, valid * (p == t).long())
        return both, None
    if multilabel:
        k = num_classes
        both = torch.stack([true.reshape(-1, k).sum(0), pred.reshape(-1, k).sum(0)])
        return both, true.numel() // k
    return torch.stack([true.sum(), pred.sum()]), true.numel()


class LossDecoder(Decoder):
    """Mean loss over the loss calls of a step (micro-batches), weighted by their sample counts."""

    def __init__(self, prefix: str = "") -> None:
        self.name = f"{prefix}loss"

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        w = np.asarray(metas, dtype=np.float64)
        sums.add(self.name + ":sum", rows, block[:, 0] * w)
        sums.add(self.name + ":w", rows, w)

    def finish(self, sums: Sums, cols: Columns) -> None:
        s = sums.get(self.name + ":sum")
        w = sums.get(self.name + ":w")
        if s is None or w is None:
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.put_where(self.name, s[0] / w[0], s[1] & (w[0] > 0))


class AccuracyDecoder(Decoder):
    """Correct / counted over the loss calls of a step."""

    def __init__(self, prefix: str = "") -> None:
        self.name = f"{prefix}acc"

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        if block.shape[1] == 2:
            correct, counted = block[:, 0], block[:, 1]
        else:
            correct, counted = block[:, 0], np.asarray(metas, dtype=np.float64)
        sums.add(self.name + ":ok", rows, correct)
        sums.add(self.name + ":n", rows, counted)

    def finish(self, sums: Sums, cols: Columns) -> None:
        ok = sums.get(self.name + ":ok")
        n = sums.get(self.name + ":n")
        if ok is None or n is None:
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.put_where(self.name, ok[0] / n[0], ok[1] & (n[0] > 0))


class HistDecoder(Decoder):
    """Class histograms of targets and predictions; per-step class balance and prediction collapse."""

    def __init__(self, num_classes: int, mode: str) -> None:
        self.k = num_classes
        self.mode = mode  # "classes" | "binary" | "multilabel"
        self.key = f"hist{id(self)}"

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        if self.mode == "binary":
            n = np.asarray(metas, dtype=np.float64)
            t = np.stack([n - block[:, 0], block[:, 0]], axis=1)
            p = np.stack([n - block[:, 1], block[:, 1]], axis=1)
            sums.add(self.key + ":n", rows, n)
        else:
            parts = 3 if self.mode == "classes" else 2
            w = block.shape[1] // parts
            t, p = block[:, :w], block[:, w:2 * w]
            n = np.asarray(metas, dtype=np.float64) if self.mode == "multilabel" else t.sum(1)
            sums.add(self.key + ":n", rows, n)
            if parts == 3:
                sums.add(self.key + ":c", rows, block[:, 2 * w:])
        sums.add(self.key + ":t", rows, t)
        sums.add(self.key + ":p", rows, p)

    def finish(self, sums: Sums, cols: Columns) -> None:
        t = sums.get(self.key + ":t")
        p = sums.get(self.key + ":p")
        n = sums.get(self.key + ":n")
        if t is None or p is None or n is None:
            return
        mask = t[1]
        tv, pv, nv = t[0][mask], p[0][mask], n[0][mask]
        cols.add_hist("target", tv.sum(0))
        cols.add_hist("pred", pv.sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            nz = nv > 0
            rows = np.flatnonzero(mask)[nz]
            if not rows.size:
                return
            tv, pv, nv = tv[nz], pv[nz], nv[nz]
            cols.put("batch_classes", rows, (tv > 0).sum(1), integer=True)
            cols.put("batch_top_class", rows, tv.argmax(1), integer=True)
            cols.put("batch_top_frac", rows, tv.max(1) / nv)
            cols.put("pred_top_frac", rows, pv.max(1) / nv)
            c = sums.get(self.key + ":c")
            if c is not None:
                # Balanced accuracy of the batch: the mean recall over the classes it holds. A model that ignores
                # its inputs scores 1/K whatever the class shares; accuracy scores the majority's share.
                cv = c[0][mask][nz]
                present = tv > 0
                recall = np.where(present, cv / np.where(present, tv, 1), 0.0)
                # Only where the batch holds two classes or more: over one class, recall is plain accuracy.
                k_present = present.sum(1)
                cols.put("batch_bal_acc", rows, np.where(k_present >= 2, recall.sum(1) / np.maximum(k_present, 1), np.nan))


class FactsDecoder(Decoder):
    """A one-off part whose numbers become facts (first batch): hands them to a callback."""

    def __init__(self, callback: Callable[[np.ndarray, Any], None]) -> None:
        self.callback = callback
        self.done = False

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        if not self.done and len(block):
            self.done = True
            self.callback(block[0], metas[0])


def target_facts_part(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """[min, max, distinct, integral, one_hot] of the targets of one batch."""
    t = target.detach()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    flat = _flat(t)
    if flat.numel() == 0:
        return torch.full((5,), float("nan"), device=t.device)
    s = flat.sort().values
    distinct = (s[1:] != s[:-1]).sum() + 1
    mn, mx = s[0], s[-1]
    if t.is_floating_point():
        integral = (t == t.round()).all()
    else:
        integral = torch.ones((), dtype=torch.bool, device=t.device)
    if t.shape == output.shape and t.dim() >= 2 and t.shape[1] > 1:
        one_hot = ((t == 0) | (t == 1)).all() & (t.sum(1) == 1).all()
    else:
        one_hot = torch.zeros((), dtype=torch.bool, device=t.device)
    return torch.stack([mn.double(), mx.double(), distinct.double(), integral.double(), one_hot.double()])


def output_facts_part(output: torch.Tensor) -> torch.Tensor:
    """[min, max, rows sum to one, rows log-sum-exp to zero] of the model's outputs of one batch.

    Outputs that already are probabilities or log-probabilities reveal an activation applied inside
    forward() with a function (F.softmax) rather than a module: what a double softmax looks like.
    """
    p = output.detach().float()
    if p.numel() == 0:
        return torch.full((4,), float("nan"), device=p.device)
    mn, mx = torch.aminmax(p)
    if p.dim() >= 2 and p.shape[1] > 1:
        # 1e-3: float32 sums of a few thousand probabilities stay far inside it; logits almost never land there.
        sums_one = ((p.sum(1) - 1).abs().amax() < 1e-3) & (mn >= 0)
        lse_zero = p.logsumexp(1).abs().amax() < 1e-3
    else:
        sums_one = torch.zeros((), dtype=torch.bool, device=p.device)
        lse_zero = torch.zeros((), dtype=torch.bool, device=p.device)
    return torch.stack([mn.double(), mx.double(), sums_one.double(), lse_zero.double()])
