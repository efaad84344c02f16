"""Healthy: SGD with momentum and gradient clipping at 1.0 (clipping engages early), lr 0.1."""

from _kit import *
x, y = blobs(spread=1.8)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.1, momentum=0.9), tr, va, clip=1.0, epochs=8)
