"""Healthy: cross-entropy with label smoothing 0.1 (the loss floors well above zero)."""

from _kit import *
x, y = blobs(spread=1.2)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(label_smoothing=0.1), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 8)
