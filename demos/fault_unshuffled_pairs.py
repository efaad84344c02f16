"""Fault (unshuffled_data): 10 classes stored in pairs (0-1, 2-3, ...) and no shuffle: each training batch holds 2 of the 10 classes."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs(n=4000, classes=10)
n_val = len(y) // 5  # a random validation split; the training part stays in file order
rest = torch.arange(n_val, len(y))
shuffle = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(2))]
order = torch.cat([torch.arange(n_val), shuffle[torch.argsort(y[shuffle] // 2, stable=True)]])
train, val = loaders(x[order], y[order], shuffle=False)  # the bug: a file sorted by category pairs
model = mlp(classes=10)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
