"""Healthy: binary classification with a Sigmoid output and BCELoss."""

from _kit import *
x, y = blobs(classes=2, spread=2.0)
tr, va = split(x, y)
m = nn.Sequential(mlp(out=1), nn.Sigmoid())
fit(m, nn.BCELoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 6, target=lambda t: t.float()[:, None], binary="prob")
