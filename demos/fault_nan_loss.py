"""Fault (nan_loss): a hand-written cross-entropy takes log(softmax) directly; a confident wrong prediction gives log(0)."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim


class NaiveCrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=1)
        return -(torch.log(p[torch.arange(len(y)), y]) * (1 - p[torch.arange(len(y)), y]) / (1 - p[torch.arange(len(y)), y])).mean()


a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, NaiveCrossEntropy(), optim.SGD(model.parameters(), lr=5.0), train, val, a.epochs)
