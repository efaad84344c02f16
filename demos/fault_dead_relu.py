"""Fault (dead_relu): hidden biases initialised very negative; most ReLUs output zero for every input and never recover."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(hidden=128)
with torch.no_grad():
    for m in list(model)[:-1]:
        if isinstance(m, nn.Linear):
            m.bias.fill_(-8.0)  # the bug
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
