"""Fault (accuracy_stuck): labels shuffled independently of the inputs: accuracy stays at chance, 1/4."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs()
y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]  # the bug: labels no longer match inputs
train, val = loaders(x, y)
model = mlp(hidden=32)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
