"""Healthy: RMSprop."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.RMSprop(m.parameters(), 1e-3), tr, va, 6)
