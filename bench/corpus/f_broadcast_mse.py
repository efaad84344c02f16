"""Fault (label_issue): regression targets of shape (N,) against outputs (N, 1): MSELoss broadcasts to (N, N)."""

from _kit import *
x, y = regression()
tr, va = split(x, y[:, 0])
m = mlp(dim=12, out=1)
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4, classify=False)
