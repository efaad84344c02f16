"""Fault (no_input_variance): a preprocessing bug zeroes every input, so no class can be told from another."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs()
x = torch.zeros_like(x)  # the bug: e.g. normalising with the wrong statistics
train, val = loaders(x, y)
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
