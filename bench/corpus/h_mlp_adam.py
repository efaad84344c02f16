"""Healthy: a 16-64-64-4 MLP on Gaussian blobs, Adam 1e-3."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va)
