"""Healthy: three classes at 85/10/5 with a class-weighted loss (handled imbalance)."""

from _kit import *
x, y = blobs(classes=3, probs=[0.85, 0.10, 0.05], spread=1.6, n=2048)
tr, va = split(x, y)
m = mlp(out=3)
w = torch.tensor([1 / 0.85, 1 / 0.10, 1 / 0.05]); w = w / w.sum() * 3
fit(m, nn.CrossEntropyLoss(weight=w), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 8)
