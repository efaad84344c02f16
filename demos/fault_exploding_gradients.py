"""Fault (exploding_gradients): a deep MLP with oversized initial weights; gradients grow layer by layer toward the input."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args(epochs=4)
train, val = loaders(*blobs())
model = mlp(depth=8, act=nn.Tanh)
with torch.no_grad():
    for m in model:
        if isinstance(m, nn.Linear):
            m.weight.mul_(6.0)  # the bug: a hand-rolled init far above Xavier's
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
