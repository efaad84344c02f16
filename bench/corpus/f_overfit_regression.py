"""Fault (overfitting): a wide MLP memorising 120 noisy regression samples."""

from _kit import *
x, y = regression(n=400, noise=1.0)
tr, va = split(x, y, val=0.7, batch=16)
m = mlp(dim=12, out=1, hidden=256)
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 40, classify=False)
