"""Healthy: regression with MSE and a linear output."""

from _kit import *
x, y = regression()
tr, va = split(x, y)
m = mlp(dim=12, out=1)
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 8, classify=False)
