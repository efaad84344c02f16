"""Metric names as frameworks spell them (`train_loss_step`, `Loss/train`, `eval_accuracy`, `lr-Adam`) → accmon's.

One table for every integration — TensorBoard and CSV imports, Lightning's `self.log`, the Hugging Face
Trainer's logs — so that the same metric gets the same name whichever way it arrived. A name is split into
lower-case words (at `/ _ - .`, `:`, spaces and camelCase), and the words decide:

| words in the name (any order)                                   | accmon name      |
|------------------------------------------------------------------|------------------|
| `loss`                                                            | `loss`           |
| `acc`, `accuracy`, `categorical accuracy`, `binary accuracy`, `top1 accuracy`, `acc1` | `acc` |
| a validation word (`val`, `valid`, `validation`, `eval`, `evaluation`, `dev`) with either of the above,
  or either of them logged during validation                      | `val_loss`, `val_acc` |
| `epoch` alone (Lightning's and Hugging Face's `epoch` scalar)     | `epoch`          |
| `lr`, `learning rate`, `lr <optimizer>` (Lightning's `lr-Adam`); `pgN` → group N-1 | `lr`, `lr/<g>` |
| `grad norm`, `gradient norm`                                      | `grad_norm`      |

Words that only say where a value belongs are ignored: `train`/`training`, `step`/`batch`/`iter`, `epoch`
next to a metric (Keras' `epoch_loss`, Lightning's `train_loss_epoch`), `mean`/`avg`/`total`. A name with
any other word (`kl_loss`, `top5_acc`, `eval_runtime`) is not one of accmon's metrics: `map_tag` returns the
reason instead. So does a `test` name: a test set is not the validation set the rules reason about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VAL_WORDS = frozenset({"val", "valid", "validation", "eval", "evaluation", "dev"})
TRAIN_WORDS = frozenset({"train", "training", "trn"})
TEST_WORDS = frozenset({"test", "testing"})
STEP_WORDS = frozenset({"step", "steps", "batch", "iter", "iteration", "it"})
FILLER_WORDS = frozenset({"mean", "avg", "average", "total", "overall", "metric", "metrics", "scalar", "scalars"})
ACC_FORMS = frozenset({
    ("acc",), ("accuracy",), ("categorical", "accuracy"), ("sparse", "categorical", "accuracy"),
    ("binary", "accuracy"), ("top1", "acc"), ("top1", "accuracy"), ("acc1",), ("acc", "top1"), ("accuracy", "top1"),
})
OPTIMIZER_WORDS = frozenset({"adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lamb",
                             "lion", "adafactor", "lbfgs", "radam", "sparseadam", "asgd", "rprop"})


@dataclass(frozen=True)
class Mapping:
    """How one tag maps: the accmon name, and a rank among tags of the same name (lower wins)."""

    name: str
    rank: int


def words(tag: str) -> list[str]:
    """`Loss/trainEpoch` → ['loss', 'train', 'epoch']."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", tag)
    return [w for w in re.split(r"[/_\-.\s:]+", spaced.lower()) if w]


def map_tag(tag: str, phase: str | None = None) -> Mapping | str:
    """The accmon name of a tag, or the reason it has none. `phase` comes from the tag's directory."""
    ws = words(tag)
    if not ws:
        return "empty tag"
    found = set(ws)
    if found & TEST_WORDS:
        return "a test-set metric (accmon's rules read training and validation metrics)"
    is_val = bool(found & VAL_WORDS) or phase == "val"
    if found & VAL_WORDS and found & TRAIN_WORDS:
        return "names both training and validation"
    per_step = bool(found & STEP_WORDS)
    rest = [w for w in ws if w not in VAL_WORDS and w not in TRAIN_WORDS and w not in STEP_WORDS and w not in FILLER_WORDS]
    if rest == ["epoch"]:
        if is_val:
            return "an epoch counter of the validation pass"
        return Mapping("epoch", 0)
    per_epoch = "epoch" in rest
    rest = [w for w in rest if w != "epoch"]
    # Training metrics: per-step series show more than per-epoch means. Validation: one value per pass.
    rank = 0 if per_step else (2 if per_epoch else 1)
    if is_val:
        rank = 0 if per_epoch else (2 if per_step else 1)
    key = tuple(rest)
    if key == ("loss",):
        return Mapping("val_loss" if is_val else "loss", rank)
    if key in ACC_FORMS:
        return Mapping("val_acc" if is_val else "acc", rank)
    if is_val:
        return "not a metric accmon reads for validation"
    if key[:1] == ("lr",) or key[:2] == ("learning", "rate"):
        tail = [w for w in key[1 if key[0] == "lr" else 2:] if w not in OPTIMIZER_WORDS]  # Lightning: lr-Adam/pg2
        if not tail:
            return Mapping("lr", rank)
        if len(tail) == 1 and re.fullmatch(r"pg\d+", tail[0]):
            group = max(int(tail[0][2:]) - 1, 0)  # Lightning numbers parameter groups from 1
            return Mapping("lr" if group == 0 else f"lr/{group}", rank)
        return "not a metric accmon reads"
    if key in (("grad", "norm"), ("gradient", "norm"), ("grad", "norm", "total")):
        return Mapping("grad_norm", rank)
    return "not a metric accmon reads"
