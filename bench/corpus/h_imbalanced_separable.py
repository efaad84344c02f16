"""Healthy: 80/20 classes that are well separated; an unweighted loss learns both."""

from _kit import *
x, y = blobs(classes=2, probs=[0.8, 0.2], spread=1.0)
tr, va = split(x, y)
m = mlp(out=2)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 6)
