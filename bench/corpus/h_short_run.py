"""Healthy: a short run of 40 steps that learns quickly."""

from _kit import *
x, y = blobs(n=800, spread=1.0)
tr, va = split(x, y, batch=32)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 5e-3), tr, va, 2)
