"""Healthy: gradient accumulation over 4 micro-batches of 16."""

from _kit import *
x, y = blobs()
tr, va = split(x, y, batch=16)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 6, accum=4)
