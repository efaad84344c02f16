"""Healthy: batches of 8 (a noisy loss curve)."""

from _kit import *
x, y = blobs(n=768)
tr, va = split(x, y, batch=8)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.02, momentum=0.9), tr, va, 4)
