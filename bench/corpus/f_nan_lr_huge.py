"""Fault (nan_loss): Adam at lr 50 on a regression: the loss overflows to inf, then NaN."""

from _kit import *
x, y = regression()
tr, va = split(x * 100, y * 1000)
m = mlp(dim=12, out=1)
fit(m, nn.MSELoss(), torch.optim.SGD(m.parameters(), 1.0), tr, va, 3, classify=False)
