"""Healthy: binary task with 12% positives, BCEWithLogitsLoss(pos_weight)."""

from _kit import *
x, y = blobs(classes=2, probs=[0.88, 0.12], spread=1.4, n=2048)
tr, va = split(x, y)
m = mlp(out=1)
fit(m, nn.BCEWithLogitsLoss(pos_weight=torch.tensor(0.88 / 0.12)), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 8,
    target=lambda t: t.float()[:, None], binary=True)
