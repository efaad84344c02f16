"""Activation statistics from forward hooks: dead ReLUs, saturated sigmoids and tanh, mean and spread.

Each call adds one small device vector [special count, sum, L2 norm] (the element count is the shape's);
a module called several times in a step (a shared ReLU) sums its calls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .ledger import Columns, Decoder, Sums

ZERO = "zero"  # ReLU family: the fraction exactly zero (a unit that is always zero is dead)
SAT01 = "sat01"  # outputs in (0, 1): saturated within 0.01 of either end (docs/frames.md, act_sat)
LOGSAT = "logsat"  # log-probabilities: the same band, in log space
TANH = "tanh"  # outputs in (-1, 1): saturated where |y| > 0.99
PLAIN = "plain"  # mean and std only (GELU, SiLU, LeakyReLU...: no exact zeros, no hard saturation)

# The saturation band of docs/frames.md: within 0.01 of the asymptote. Where a sigmoid's derivative,
# p(1 - p), is below 0.0099 — about 1/25 of its value at 0 — gradients through it all but vanish.
SAT_EPS = 0.01

KINDS: dict[type, str] = {
    nn.ReLU: ZERO,
    nn.ReLU6: ZERO,
    nn.Sigmoid: SAT01,
    nn.Hardsigmoid: SAT01,
    nn.Softmax: SAT01,
    nn.Softmax2d: SAT01,
    nn.LogSoftmax: LOGSAT,
    nn.LogSigmoid: LOGSAT,
    nn.Tanh: TANH,
    nn.Hardtanh: TANH,
    nn.Softsign: TANH,
    nn.GELU: PLAIN,
    nn.SiLU: PLAIN,
    nn.ELU: PLAIN,
    nn.SELU: PLAIN,
    nn.CELU: PLAIN,
    nn.LeakyReLU: PLAIN,
    nn.PReLU: PLAIN,
    nn.RReLU: PLAIN,
    nn.Mish: PLAIN,
    nn.Softplus: PLAIN,
    nn.GLU: PLAIN,
}

# Output activation names for facts (model.output_activation) by module type.
OUTPUT_NAMES: dict[type, str] = {
    nn.Softmax: "softmax",
    nn.Softmax2d: "softmax",
    nn.LogSoftmax: "log_softmax",
    nn.Sigmoid: "sigmoid",
    nn.LogSigmoid: "log_sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
}

_LOG_LO = math.log(SAT_EPS)
_LOG_HI = math.log(1 - SAT_EPS)


def kind_of(module: nn.Module) -> str | None:
    kind = KINDS.get(type(module))
    if kind is None and isinstance(module, tuple(KINDS)):
        kind = next(k for t, k in KINDS.items() if isinstance(module, t))
    return kind


def act_part(kind: str, y: torch.Tensor) -> torch.Tensor:
    """[special count, sum, L2 norm] of one activation output (special: zeros or saturated elements)."""
    y = y.detach()
    s = y.sum(dtype=torch.float32)
    norm = torch.linalg.vector_norm(y, dtype=torch.float32)
    if kind == ZERO:
        special = (y == 0).sum()
    elif kind == SAT01:
        special = ((y - 0.5).abs() > 0.5 - SAT_EPS).sum()
    elif kind == LOGSAT:
        special = ((y < _LOG_LO) | (y > _LOG_HI)).sum()
    elif kind == TANH:
        special = (y.abs() > 1 - SAT_EPS).sum()
    else:
        return torch.stack([s, norm])
    return torch.stack([special.float(), s, norm])


class ActDecoder(Decoder):
    """act_zero / act_sat, act_mean and act_std of one layer."""

    def __init__(self, layer: str, kind: str) -> None:
        self.layer = layer
        self.kind = kind
        self.key = f"act:{layer}"

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        n = np.asarray(metas, dtype=np.float64)
        sums.add(self.key + ":n", rows, n)
        if block.shape[1] == 3:
            sums.add(self.key + ":special", rows, block[:, 0])
        sums.add(self.key + ":sum", rows, block[:, -2])
        sums.add(self.key + ":sq", rows, block[:, -1].astype(np.float64) ** 2)

    def finish(self, sums: Sums, cols: Columns) -> None:
        got_n = sums.get(self.key + ":n")
        got_s = sums.get(self.key + ":sum")
        got_q = sums.get(self.key + ":sq")
        if got_n is None or got_s is None or got_q is None:
            return
        n, mask = got_n
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = got_s[0] / n
            var = np.maximum(got_q[0] / n - mean * mean, 0.0)
            cols.put_where(f"act_mean/{self.layer}", mean, mask)
            cols.put_where(f"act_std/{self.layer}", np.sqrt(var), mask)
            special = sums.get(self.key + ":special")
            if special is not None:
                name = "act_zero" if self.kind == ZERO else "act_sat"
                cols.put_where(f"{name}/{self.layer}", special[0] / n, special[1])
