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


# Statistics of an activation come from at most this many of its elements (an evenly strided sample):
# a fraction of dead units or a mean is known to well under 1% from 65536 samples, and an LLM's
# activations (millions of elements per call) cost no more than a small MLP's.
MAX_SAMPLE = 1 << 16


def sample(y: torch.Tensor) -> torch.Tensor:
    """An evenly strided sample of at most MAX_SAMPLE elements (a view, then one small copy)."""
    flat = y.detach().reshape(-1)
    n = flat.numel()
    if n <= MAX_SAMPLE:
        return flat
    # An odd stride does not keep landing on the same position of power-of-two shaped dimensions.
    stride = (n // MAX_SAMPLE) | 1
    return flat[::stride].contiguous()


def act_part(kind: str, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[special count, sum, L2 norm] of (a sample of) one activation output, and the elements counted.

    Counts use sign() of float tensors and a sum: on CPU that is several times faster than comparing into a
    bool tensor and summing it, and just as exact.
    """
    ys = sample(y)
    s = ys.sum(dtype=torch.float32)
    norm = torch.linalg.vector_norm(ys, dtype=torch.float32)
    if kind == ZERO:
        # ReLU outputs are >= 0: the non-zeros are sign() == 1; the host turns this into zeros.
        special = ys.numel() - torch.sign(ys).sum(dtype=torch.float32)
    elif kind == SAT01:
        special = torch.sign(torch.relu((ys - 0.5).abs_().sub_(0.5 - SAT_EPS))).sum(dtype=torch.float32)
    elif kind == LOGSAT:
        mid, half = (_LOG_LO + _LOG_HI) / 2, (_LOG_HI - _LOG_LO) / 2
        special = torch.sign(torch.relu((ys - mid).abs_().sub_(half))).sum(dtype=torch.float32)
    elif kind == TANH:
        special = torch.sign(torch.relu(ys.abs().sub_(1 - SAT_EPS))).sum(dtype=torch.float32)
    else:
        return torch.stack([s, norm]), ys.numel()
    return torch.stack([special, s, norm]), ys.numel()


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
