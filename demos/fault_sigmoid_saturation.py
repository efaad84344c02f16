"""Fault (sigmoid_saturation): large weights push the hidden sigmoids to 0 or 1, where their gradient vanishes."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(act=nn.Sigmoid)
with torch.no_grad():
    for m in model:
        if isinstance(m, nn.Linear):
            m.weight.mul_(10.0)  # the bug
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
