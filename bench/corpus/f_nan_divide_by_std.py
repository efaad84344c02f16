"""Fault (nan_loss): standardising by a per-feature std that is 0 for a constant column: 0/0 puts NaN in every input."""

from _kit import *
x, y = blobs()
x[:, 3] = 1.0
x = (x - x.mean(0)) / x.std(0)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 3)
